"""reverse-sshfs mounts on the real cloud-init Debian guest built here (`build:debian-12`):
a host file is visible at the mount point, a file the guest writes in a writable mount
appears on the host, a read-only mount refuses writes (even root's), and no -virtfs is
given to qemu. One boot. The 9p cases are checked on the shared Debian instance
(test_debian_shared.py), whose mountType is 9p.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Limactl, qemu_pids_for

# Each test boots the Debian guest once; under TCG on a loaded machine that takes minutes.
pytestmark = [pytest.mark.integration, pytest.mark.debian, pytest.mark.timeout(2400)]


def spec(mount_type: str, mounts: str) -> str:
    return (
        "images:\n- location: build:debian-12\n  arch: x86_64\n"
        "cpus: 2\nmemory: 1GiB\ndisk: 6GiB\n"
        f"mountType: {mount_type}\n"
        f"mounts:\n{mounts}"
        "vmOpts:\n  qemu:\n    restrictNetwork: true\n"
    )


def shell(limactl: Limactl, name: str, script: str, *, check: bool = True,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`limactl shell NAME sh -c SCRIPT`, from `cwd` when given (the host's directory)."""
    if cwd is None:
        return limactl("shell", name, "sh", "-c", script, check=check)
    return subprocess.run([sys.executable, "-m", "lima.cli", "shell", name, "sh", "-c", script],
                          env=limactl.env(), capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=check)


def host_dirs(tmp_path: Path) -> tuple[Path, Path]:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "hello.txt").write_text("from the host\n")
    rw = tmp_path / "rw"
    rw.mkdir()
    rw.chmod(0o777)  # the guest user writes here; 9p shows the host's owner and mode
    return ro, rw


def check_common(limactl: Limactl, name: str, ro: Path, rw: Path) -> None:
    out = shell(limactl, name, "cat /mnt/ro/hello.txt").stdout
    assert out == "from the host\n"
    shell(limactl, name, "echo from the guest > /mnt/rw/guest.txt")
    assert (rw / "guest.txt").read_text() == "from the guest\n"
    refused = shell(limactl, name, "sudo touch /mnt/ro/nope", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr, refused.stderr
    assert not (ro / "nope").exists()


def test_reverse_sshfs_mounts(limactl: Limactl, tmp_path: Path) -> None:
    ro, rw = host_dirs(tmp_path)
    f = tmp_path / "sshfs.yaml"
    f.write_text(spec("reverse-sshfs", (
        f"- location: {ro}\n  mountPoint: /mnt/ro\n"
        f"- location: {rw}\n  mountPoint: /mnt/rw\n  writable: true\n"
    )))
    out = limactl("apply", "--timeout", "1200", str(f), timeout=1300)
    assert "sshfs: running" in out.stdout, out.stdout + out.stderr
    assert "degraded" not in out.stdout + out.stderr
    table = shell(limactl, "sshfs", "cat /proc/mounts").stdout
    types = {ln.split()[1]: ln.split()[2] for ln in table.splitlines()}
    assert types["/mnt/ro"] == types["/mnt/rw"] == "fuse.sshfs"
    check_common(limactl, "sshfs", ro, rw)
    assert "-virtfs" not in (limactl.home / "sshfs" / "ha.stderr.log").read_text()
    limactl("delete", "-f", "sshfs", timeout=300)
    assert qemu_pids_for(limactl.home) == []
