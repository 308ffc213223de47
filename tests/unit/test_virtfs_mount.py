"""The one guest command that mounts the 9p/virtiofs devices (lima.drivers.mounts
.virtfs_command), run under dash (Debian) and busybox sh (build:tiny) against a stand-in
/proc/mounts, `sudo` and `mount`: what is mounted costs no sudo, the rest one sudo, and
each failure is told by its mount's index with the guest's last words."""

from __future__ import annotations

import shutil
import subprocess
from hashlib import sha256
from pathlib import Path

import pytest

from lima.drivers.mounts import virtfs_command
from lima.schemas.spec import Mount

pytestmark = [pytest.mark.unit, pytest.mark.processes]

FAKE_SUDO = """#!/bin/sh
[ "$1" = "-n" ] && shift
echo sudo >> "$LOG"
exec "$@"
"""
# Records its argv; a tag holding "0bad" stands for a device the guest does not have.
FAKE_MOUNT = """#!/bin/sh
echo "mount $*" >> "$LOG"
case "$*" in
*"$BAD_TAG"*) echo "mount: something went wrong first" >&2
    echo "mount: $6: special device $5 does not exist." >&2; exit 32 ;;
esac
exit 0
"""

SHELLS = ["dash", "busybox"]


def tag(m: Mount) -> str:
    return "lima-" + sha256(f"{m.location}:{m.mount_point}".encode()).hexdigest()[:16]


def run(tmp: Path, shell: str, mounts: list[Mount], mounted: list[str],
        bad: Mount | None = None) -> tuple[dict[str, str], list[str]]:
    """Per mount index: "ok" or "failed WORDS"; and what sudo and mount logged."""
    if shell == "busybox" and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("sudo", FAKE_SUDO), ("mount", FAKE_MOUNT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    table = tmp / "mounts"
    table.write_text("".join(f"tag {p.replace(' ', chr(92) + '040')} 9p ro 0 0\n"
                             for p in mounted))
    log = tmp / "log"
    log.write_text("")
    command = virtfs_command("9p", mounts).replace("/proc/mounts", str(table))
    argv = ["dash", "-c", command] if shell == "dash" else [
        shutil.which("busybox") or "busybox", "sh", "-c", command]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log),
           "BAD_TAG": tag(bad) if bad else "none"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        index, _, words = rest.partition(" ")
        assert word in ("mount-ok", "mount-failed"), line
        found[index] = "ok" if word == "mount-ok" else f"failed {words}"
    return found, log.read_text().splitlines()


@pytest.mark.parametrize("shell", SHELLS)
def test_all_mounted_costs_no_sudo(tmp_path: Path, shell: str) -> None:
    two = [Mount(location="/h/a", mount_point=str(tmp_path / "a b")),
           Mount(location="/h/c", mount_point=str(tmp_path / "c"))]
    found, log = run(tmp_path, shell, two, [m.mount_point for m in two])
    assert found == {"0": "ok", "1": "ok"}
    assert log == []  # neither sudo nor mount ran


@pytest.mark.parametrize("shell", SHELLS)
def test_the_unmounted_ones_are_mounted_by_tag_under_one_sudo(tmp_path: Path,
                                                              shell: str) -> None:
    a = Mount(location="/srv/a b", mount_point=str(tmp_path / "mnt" / "a b"), writable=True,
              nine_p={"protocolVersion": "9p2000.L", "msize": "512KiB", "cache": "mmap"})
    b = Mount(location="/h", mount_point=str(tmp_path / "h"))
    c = Mount(location="/srv/c", mount_point=str(tmp_path / "c"))
    found, log = run(tmp_path, shell, [a, b, c], [b.mount_point])
    assert log == [
        "sudo",
        f"mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=524288,cache=mmap {tag(a)} "
        f"{a.mount_point}",
        f"mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=131072,cache=fscache {tag(c)} "
        f"{c.mount_point}"]
    assert (tmp_path / "mnt" / "a b").is_dir() and (tmp_path / "c").is_dir()
    assert found == {"0": "ok", "1": "ok", "2": "ok"}


@pytest.mark.parametrize("shell", SHELLS)
def test_each_failure_names_its_mount_with_the_last_words(tmp_path: Path, shell: str) -> None:
    (tmp_path / "file").write_text("")
    nodir = Mount(location="/x", mount_point=str(tmp_path / "file" / "x"))
    nodev = Mount(location="/y", mount_point=str(tmp_path / "y"))
    fine = Mount(location="/z", mount_point=str(tmp_path / "z"))
    found, log = run(tmp_path, shell, [nodir, nodev, fine], [], bad=nodev)
    assert found["2"] == "ok"
    assert found["0"].startswith("failed mkdir") and "Not a directory" in found["0"]
    assert found["1"] == (f"failed mount: {nodev.mount_point}: special device {tag(nodev)} "
                          "does not exist.")
    assert log.count("sudo") == 1
