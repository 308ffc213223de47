"""`limactl restart` and `limactl clone --start` on real QEMU with the tiny guest, through
the real CLI: a restart is a new boot on the same disk; a clone of the stopped instance
boots under its own name with the source's data, on a disk of its own; a factory reset
boots a fresh disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

MiB = 1 << 20
MARK = "limapy-written-before-the-restart"
CLONE_MARK = "limapy-written-in-the-clone"


def iid(home: Path, name: str) -> str:
    return str(json.loads((home / name / "status.json").read_text())["iid"])


def write_at(limactl: Limactl, name: str, mib: int, text: str) -> None:
    limactl("shell", name, "sudo", "sh", "-c",
            f"printf {text} | dd of=/dev/vda bs=1M seek={mib} conv=notrunc && sync")


def read_at(limactl: Limactl, name: str, mib: int, size: int) -> str:
    return limactl("shell", name, "sudo", "sh", "-c",
                   f"dd if=/dev/vda bs=1M skip={mib} count=1 2>/dev/null | head -c {size}"
                   ).stdout


def disk_bytes_at(disk: Path, tmp: Path, mib: int, size: int) -> bytes:
    raw = tmp / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True,
                   capture_output=True)
    with raw.open("rb") as f:
        f.seek(mib * MiB)
        data = f.read(size)
    raw.unlink()
    return data


def test_restart_then_clone_of_the_stopped_instance(limactl: Limactl, tmp_path: Path) -> None:
    tiny = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", tiny)
    limactl("apply", str(tiny), timeout=300)
    first = iid(limactl.home, "t")
    write_at(limactl, "t", 1, MARK)

    out = limactl("restart", "t", timeout=300)
    assert "t: running" in out.stdout
    assert iid(limactl.home, "t") != first  # a new boot ...
    assert read_at(limactl, "t", 1, len(MARK)) == MARK  # ... on the same disk
    assert len(qemu_pids_for(limactl.home)) == 1

    limactl("stop", "t", timeout=120)
    cloned = limactl("clone", "t", "c")
    assert cloned.stdout == ""
    # A second clone to the same name is refused; the stopped clone starts under its name.
    again = limactl("clone", "t", "c", check=False)
    assert again.returncode == 1 and "instance `c` already exists" in again.stderr
    limactl("delete", "c")
    started = limactl("clone", "--start", "t", "c", timeout=300)
    assert "c: running" in started.stdout
    assert limactl("shell", "c", "hostname").stdout.strip() == "lima-c"
    assert read_at(limactl, "c", 1, len(MARK)) == MARK  # the source's data
    write_at(limactl, "c", 2, CLONE_MARK)
    limactl("stop", "c", timeout=120)
    assert qemu_pids_for(limactl.home) == []

    # Each has its own disk: the clone's write is in the clone's only.
    size = len(CLONE_MARK)
    assert disk_bytes_at(limactl.home / "c" / "diffdisk", tmp_path, 2, size) == \
        CLONE_MARK.encode()
    assert disk_bytes_at(limactl.home / "t" / "diffdisk", tmp_path, 2, size) != \
        CLONE_MARK.encode()

    # factory-reset: the next start boots a fresh disk made from the image again.
    limactl("factory-reset", "t")
    assert not (limactl.home / "t" / "diffdisk").exists()
    limactl("start", "t", timeout=300)
    assert read_at(limactl, "t", 1, len(MARK)) != MARK
    limactl("stop", "t", timeout=120)

    limactl("delete", "c", "t")
    assert not (limactl.home / "c").exists() and not (limactl.home / "t").exists()
