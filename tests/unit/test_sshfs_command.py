"""The guest commands of a reverse-sshfs and of a 9p/virtiofs mount (pure)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from lima.drivers.mounts import sshfs_command
from lima.schemas.spec import Mount


def test_read_only_by_default() -> None:
    cmd = sshfs_command(Mount(location="/home/u", mount_point="/home/u"))
    assert cmd == ("{ sudo umount -l /home/u 2>/dev/null || true; } && sudo mkdir -p /home/u && "
                   "exec sudo sshfs -o slave,allow_other,ro :/home/u /home/u")


def test_writable_with_options_and_odd_paths() -> None:
    mount = Mount(location="/tmp/my dir", mount_point="/mnt/x y", writable=True,
                  sshfs={"cache": False, "followSymlinks": True})
    words = shlex.split(sshfs_command(mount))
    assert words[words.index("-o") + 1] == "slave,allow_other,cache=no,follow_symlinks"
    assert words[-2:] == [":/tmp/my dir", "/mnt/x y"]
    assert words[:5] == ["{", "sudo", "umount", "-l", "/mnt/x y"]
    assert words[words.index("mkdir") - 1:words.index("mkdir") + 3] == [
        "sudo", "mkdir", "-p", "/mnt/x y"]


@pytest.mark.processes
@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_is_mounted_reads_proc_mounts_escapes(tmp_path: Path, shell: str) -> None:
    """The check against a /proc/mounts with an escaped space, under dash (Debian's awk
    is mawk) and busybox sh and awk (build:tiny)."""
    import subprocess

    from lima.drivers.mounts import is_mounted_command

    table = tmp_path / "mounts"
    table.write_text("lima-x /mnt/a\\040b virtiofs rw 0 0\ntag /mnt/plain 9p ro 0 0\n")
    argv = ["dash", "-c"] if shell == "dash" else ["busybox", "sh", "-c"]
    env = None
    if shell == "busybox":
        (tmp_path / "awk").symlink_to(shutil.which("busybox") or "busybox")
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}

    def mounted(point: str) -> bool:
        cmd = is_mounted_command(point).replace("/proc/mounts", str(table))
        return subprocess.run([*argv, cmd], env=env, timeout=30).returncode == 0

    assert mounted("/mnt/a b") and mounted("/mnt/plain")
    assert not mounted("/mnt/a") and not mounted("/mnt/other")


def test_mount_all_reports_each_failed_virtfs_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    from lima.drivers import mounts as mod

    ran: list[str] = []

    def fake_run(client: object, command: str, *, timeout: float) -> tuple[int, str, str]:
        ran.append(command)
        return 0, ("mount-ok 0\nmount-failed 1 mkdir: cannot create directory '/sys/x': "
                   "No such file or directory\n"), ""

    monkeypatch.setattr(mod, "run", fake_run)
    ok = Mount(location="/srv/ok", mount_point="/mnt/ok")
    bad = Mount(location="/srv/bad", mount_point="/sys/x", writable=True)
    errors = mod.mount_all(object(), [ok, bad], "9p")  # type: ignore[arg-type]
    assert errors == ["mount /srv/bad on /sys/x (9p) failed: mkdir: cannot create directory "
                      "'/sys/x': No such file or directory"]
    assert len(ran) == 1 and " -t 9p " in ran[0]  # one guest command for every mount


def test_a_mount_the_guest_said_nothing_of_fails_with_its_last_words(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lima.drivers import mounts as mod
    from lima.errors import TemporaryError

    answers: list[tuple[int, str, str] | Exception] = [
        (1, "mount-ok 0\n", "sudo: a terminal is required\nsudo: a password is required\n"),
        (7, "", ""),
        TemporaryError("ssh command timed out after 20 s"),
    ]

    def fake_run(client: object, command: str, *, timeout: float) -> tuple[int, str, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(mod, "run", fake_run)
    two = [Mount(location="/a", mount_point="/a"), Mount(location="/b", mount_point="/b")]
    assert mod.mount_virtfs(object(), "9p", two) == [  # type: ignore[arg-type]
        None, "sudo: a password is required"]
    assert mod.mount_virtfs(object(), "9p", two[:1]) == ["exit status 7"]  # type: ignore[arg-type]
    assert mod.mount_virtfs(object(), "9p", two) == [  # type: ignore[arg-type]
        "ssh command timed out after 20 s"] * 2
    assert mod.mount_virtfs(object(), "9p", []) == []  # type: ignore[arg-type]
