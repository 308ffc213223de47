"""The guest command of a reverse-sshfs mount (pure)."""

from __future__ import annotations

import shlex

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
