"""mountType virtiofs and mountInotify on the fast build:tiny guest (its cloud kernel has the
virtiofs module, not 9p), through the real CLI, QEMU's virtiofsd and TCG.

One boot: a host file is read through a read-only mount that refuses writes (even root's);
the guest user writes through a writable one; a mount that cannot work leaves the guest
Degraded (MountFailed) with the guest's error; lima.env says virtiofs; with mountInotify a
file the host changes gets an attribute change from the guest (busybox's touch cannot set
nanoseconds, so the guest sets the file's mode to itself: its ctime moves, its mtime not);
a host agent killed while the guest runs is replaced by one that attaches to qemu and adopts
the daemons; stop ends every virtiofsd and removes its socket. A second start, whose qemu is
then killed, shows the daemons ended on that path too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from lima.drivers import procs, virtiofs
from tests.integration.conftest import REPO, Limactl, qemu_pids_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(virtiofs.find_virtiofsd() is None,
                                 reason="no virtiofsd on this host")]


def daemon_pids(inst: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(inst.glob("virtiofsd-*.pid"))]


def alive(pid: int) -> bool:
    """A running virtiofsd (not a zombie, not a recycled PID)."""
    argv = procs.cmdline(pid)
    return procs.pid_alive(pid) and bool(argv) and os.path.basename(argv[0]) == "virtiofsd"


def wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.1)
    return False


def test_virtiofs_and_inotify_on_tiny(limactl: Limactl, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    rw.chmod(0o777)  # the guest user (uid 1000) writes here as itself
    (ro / "hello.txt").write_text("from the host\n")
    f = tmp_path / "vt.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    with f.open("a") as out:
        out.write("mountType: virtiofs\nmountInotify: true\nmounts:\n"
                  f"- location: {ro}\n  mountPoint: /mnt/ro\n"
                  f"- location: {rw}\n  mountPoint: /mnt/rw\n  writable: true\n"
                  f"- location: {tmp_path / 'bad'}\n  mountPoint: /sys/lima-cannot-mount\n")
    out = limactl("apply", str(f), timeout=600)
    assert "vt: running" in out.stdout, out.stdout + out.stderr
    inst = limactl.home / "vt"
    pids = daemon_pids(inst)
    assert len(pids) == 3 and all(alive(p) for p in pids)
    assert sorted(p.name for p in inst.glob("virtiofsd-*.sock")) == [
        "virtiofsd-0.sock", "virtiofsd-1.sock", "virtiofsd-2.sock"]

    table = limactl("shell", "vt", "cat", "/proc/mounts").stdout
    lines = {ln.split()[1]: ln.split() for ln in table.splitlines()}
    assert lines["/mnt/ro"][2] == "virtiofs" and lines["/mnt/ro"][3].startswith("ro")
    assert lines["/mnt/rw"][2] == "virtiofs" and lines["/mnt/rw"][3].startswith("rw")
    assert limactl("shell", "vt", "cat", "/mnt/ro/hello.txt").stdout == "from the host\n"
    limactl("shell", "vt", "sh", "-c", "echo from the guest > /mnt/rw/guest.txt")
    assert (rw / "guest.txt").read_text() == "from the guest\n"
    assert (rw / "guest.txt").stat().st_uid == 1000  # written as the guest user
    refused = limactl("shell", "vt", "sudo", "touch", "/mnt/ro/nope", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert not (ro / "nope").exists()

    status = json.loads((inst / "status.json").read_text())
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MountFailed")
    assert "/sys/lima-cannot-mount" in degraded["message"]
    assert "(virtiofs)" in degraded["message"] and "/mnt/rw" not in degraded["message"]
    env = limactl("shell", "vt", "sudo", "cat", "/mnt/lima-cidata/lima.env").stdout
    assert "LIMA_CIDATA_MOUNTTYPE=virtiofs" in env.splitlines()

    # mountInotify: a file the host changes gets an attribute change made in the guest.
    changed = rw / "sub" / "from-host.txt"
    changed.parent.mkdir()
    changed.write_text("x")
    time.sleep(1.0)
    before = changed.stat()
    changed.write_text("y")  # one more change, after the first was forwarded
    written = changed.stat()
    assert wait_for(lambda: changed.stat().st_ctime_ns > written.st_ctime_ns), \
        "the guest made no attribute change to the file the host wrote"
    assert changed.stat().st_mtime_ns == written.st_mtime_ns  # its times kept exactly
    assert written.st_mtime_ns >= before.st_mtime_ns
    # Our own change coming back is not sent again (no loop): the ctime stays put.
    settled = changed.stat().st_ctime_ns
    time.sleep(1.5)
    assert changed.stat().st_ctime_ns == settled
    # A read-only mount is not watched (Lima: only writable mounts).
    log = (inst / "ha.stderr.log").read_text()
    assert f"enable inotify for writable mount: {os.path.realpath(rw)}" in log
    assert f"enable inotify for writable mount: {os.path.realpath(ro)}" not in log

    # A host agent killed while the guest runs: its successor attaches to qemu, adopts the
    # daemons (which serve on), finds the mounts in place, and ends the daemons at stop.
    os.kill(int((inst / "ha.pid").read_text()), signal.SIGKILL)
    limactl("start", "vt", timeout=300)
    assert daemon_pids(inst) == pids and all(alive(p) for p in pids)
    assert "adopted the running virtiofsd" in (inst / "ha.stderr.log").read_text()
    limactl("shell", "vt", "sh", "-c", "echo again > /mnt/rw/again.txt")
    assert (rw / "again.txt").read_text() == "again\n"
    status = json.loads((inst / "status.json").read_text())
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "/mnt/rw" not in degraded["message"] and "/mnt/ro" not in degraded["message"]

    limactl("stop", "vt", timeout=300)
    assert wait_for(lambda: not any(alive(p) for p in pids))
    assert not list(inst.glob("virtiofsd-*"))

    # qemu dying ends the daemons as well.
    limactl("start", "vt", timeout=600)
    pids = daemon_pids(inst)
    assert len(pids) == 3 and all(alive(p) for p in pids)
    [qemu] = qemu_pids_for(limactl.home)
    os.kill(qemu, signal.SIGKILL)
    assert wait_for(lambda: not any(alive(p) for p in pids)), "virtiofsd outlived qemu"
    assert wait_for(lambda: not list(inst.glob("virtiofsd-*")))
    limactl("delete", "-f", "vt", timeout=300)
    assert qemu_pids_for(limactl.home) == []
