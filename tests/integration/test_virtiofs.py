"""mountType virtiofs on the real cloud-init Debian guest (`build:debian-12`, its generic
kernel's virtiofs module), one boot: cloud-init mounts both devices from the seed; a host
file is read through the read-only mount, which refuses writes (even root's); a file the
guest writes in the writable mount appears on the host, one the host writes appears in
the guest; lima.env says virtiofs; with mountInotify a guest inotify watcher (python3, as
the image has no inotifywait) sees the change the host made, and the guest's coreutils
touch gives the file the host's times exactly (Lima's semantics); stop ends virtiofsd.
About 90 s under TCG; run it under `flock /tmp/limapy-debian.lock`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lima.drivers import virtiofs
from tests.integration.conftest import Limactl, qemu_pids_for

pytestmark = [pytest.mark.integration, pytest.mark.debian, pytest.mark.timeout(2400),
              pytest.mark.skipif(virtiofs.find_virtiofsd() is None,
                                 reason="no virtiofsd on this host")]

# A guest-side inotify watcher of one directory: prints "ready", then the first event's
# mask and file name.
WATCHER = """\
import ctypes, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
IN_MODIFY, IN_ATTRIB, IN_CREATE = 0x2, 0x4, 0x100
if libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_MODIFY | IN_ATTRIB | IN_CREATE) < 0:
    sys.exit("inotify_add_watch failed")
print("ready", flush=True)
if select.select([fd], [], [], 300)[0]:
    buf = os.read(fd, 4096)
    _wd, mask, _cookie, size = struct.unpack_from("iIII", buf)
    print(mask, buf[16:16 + size].rstrip(b"\\0").decode(), flush=True)
"""


def wait_for(predicate: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.25)
    return False


def test_virtiofs_mounts_on_debian(limactl: Limactl, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    rw.chmod(0o777)  # the guest user writes here as itself
    (ro / "hello.txt").write_text("from the host\n")
    f = tmp_path / "vfs.yaml"
    f.write_text(
        "images:\n- location: build:debian-12\n  arch: x86_64\n"
        "cpus: 2\nmemory: 1GiB\ndisk: 6GiB\n"
        "mountType: virtiofs\nmountInotify: true\nmounts:\n"
        f"- location: {ro}\n  mountPoint: /mnt/ro\n"
        f"- location: {rw}\n  mountPoint: /mnt/rw\n  writable: true\n"
        "vmOpts:\n  qemu:\n    restrictNetwork: true\n")
    out = limactl("apply", "--timeout", "1200", str(f), timeout=1300)
    assert "vfs: running" in out.stdout, out.stdout + out.stderr
    assert "degraded" not in out.stdout + out.stderr
    inst = limactl.home / "vfs"
    pids = [int(p.read_text()) for p in sorted(inst.glob("virtiofsd-*.pid"))]
    assert len(pids) == 2

    def sh(script: str, check: bool = True, input: str | None = None) -> str:
        res = limactl("shell", "vfs", "sh", "-c", script, check=check, input=input)
        return res.stdout

    table = sh("cat /proc/mounts")
    lines = {ln.split()[1]: ln.split() for ln in table.splitlines()}
    assert lines["/mnt/ro"][2] == "virtiofs" and lines["/mnt/ro"][3].startswith("ro,")
    assert lines["/mnt/rw"][2] == "virtiofs" and lines["/mnt/rw"][3].startswith("rw,")
    # cloud-init mounted them from the seed's fstab entries (the agent only checked).
    assert "virtiofs" in sh("grep virtiofs /etc/fstab")
    assert sh("cat /mnt/ro/hello.txt") == "from the host\n"
    sh("echo from the guest > /mnt/rw/guest.txt")
    assert (rw / "guest.txt").read_text() == "from the guest\n"
    refused = limactl("shell", "vfs", "sudo", "touch", "/mnt/ro/nope", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert not (ro / "nope").exists()
    env = sh("sudo cat /mnt/lima-cidata/lima.env").splitlines()
    assert "LIMA_CIDATA_MOUNTTYPE=virtiofs" in env and "LIMA_CIDATA_MOUNTS=2" in env

    # mountInotify: a watcher in the guest sees the change the host makes.
    sh("cat > /tmp/watch.py", input=WATCHER)
    sh("setsid python3 /tmp/watch.py /mnt/rw > /tmp/watch.out 2>&1 < /dev/null &")
    assert wait_for(lambda: sh("cat /tmp/watch.out", check=False).startswith("ready")), \
        sh("cat /tmp/watch.out", check=False)
    host_file = rw / "from-host.txt"
    host_file.write_text("written on the host\n")
    mtime = host_file.stat().st_mtime_ns
    assert wait_for(lambda: len(sh("cat /tmp/watch.out").splitlines()) > 1), \
        "the guest watcher saw nothing"
    mask, name = sh("cat /tmp/watch.out").splitlines()[1].split(" ", 1)
    assert name == "from-host.txt" and int(mask) & 0x4  # IN_ATTRIB, from the guest's touch
    stat = host_file.stat()
    assert (stat.st_atime_ns, stat.st_mtime_ns) == (mtime, mtime)
    assert sh("cat /mnt/rw/from-host.txt") == "written on the host\n"

    rec = json.loads(limactl("list", "--format", "json", "vfs").stdout)
    assert rec["status"] == "Running"
    limactl("stop", "vfs", timeout=300)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    assert not list(inst.glob("virtiofsd-*"))
    limactl("delete", "-f", "vfs", timeout=300)
    assert qemu_pids_for(limactl.home) == []
    assert os.listdir(rw)  # the host's files stay
