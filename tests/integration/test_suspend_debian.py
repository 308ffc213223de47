"""Suspend and resume of the Debian guest (`build:debian-12`, cloud-init, 9p), through the
real CLI: one boot, then the resumes, and one cold boot for a spec changed while suspended.

The instance (the build:debian-12 image of template:debian-12-local) has a read-only and a
writable 9p mount (Lima's default mountType on QEMU), a
static forward to an http server the guest runs on 127.0.0.1, and restrictNetwork. In file
order: a suspend refused while a 9p mount is busy (the guest left as it was); a process, a
file in /tmp, the clock, the forward and the mounts surviving suspend + start; a kill -9 of
the host agent in the middle of a suspend (a new agent continues the guest, mounts again,
suspends again); snapshots (refused by QEMU while 9p is mounted, as on Lima; a stopped
instance's disk snapshot restoring a file); then memory and mountType (reverse-sshfs:
mountType is one per instance) changed while suspended: a warning and a cold boot, and
the sshfs mount works. Run it under `flock /tmp/limapy-debian.lock` (one Debian guest at
a time on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import Limactl, kill_leftovers, qemu_pids_for
from tests.integration.test_disks import settle
from tests.integration.test_portfwd import free_port, http_ok, until

pytestmark = [pytest.mark.integration, pytest.mark.debian, pytest.mark.timeout(2400)]

NAME = "sdeb"

# template:debian-12-local's image, without its base mounts: its `~` is /root when the tests
# run as root, and a read-only /root in the guest fails cloud-init's root ssh key step.
SPEC = """\
images:
- location: "build:debian-12"
  arch: "x86_64"
cpus: 2
memory: "{memory}"
# Not Lima's 100GiB: cloud-init grows the root file system online, minutes under TCG.
disk: "8GiB"
mountType: {mount_type}
mounts:
- location: {ro}
  mountPoint: /mnt/ro
- location: {rw}
  mountPoint: /mnt/rw
  writable: true
vmOpts:
  qemu:
    restrictNetwork: true
portForwards:
- guestPort: {guest_port}
  hostPort: {host_port}
  static: true
"""


@dataclass
class Deb:
    limactl: Limactl
    yaml: Path
    fields: dict[str, str]
    rw: Path
    host_port: int
    guest_port: int

    def sh(self, script: str, *, check: bool = True, timeout: float = 120,
           ) -> subprocess.CompletedProcess[str]:
        return self.limactl("shell", NAME, "sh", "-c", script, check=check, timeout=timeout)

    def write(self, **changes: str) -> None:
        self.fields.update(changes)
        self.yaml.write_text(SPEC.format(**self.fields))

    def status(self) -> str:
        return str(json.loads(self.limactl("list", "--format", "json", NAME).stdout)["status"])

    def iid(self) -> str:
        return str(json.loads((self.limactl.home / NAME / "status.json").read_text())["iid"])

    def saved(self) -> set[str]:
        return {p.name for p in (self.limactl.home / NAME).iterdir()
                if p.name.startswith("suspend")}

    def mounted(self) -> set[str]:
        """The guest's mount points of this instance's mounts that are mounted now."""
        out = self.sh("awk '{print $2}' /proc/mounts").stdout.split()
        return {p for p in out if p in ("/mnt/ro", "/mnt/rw")}


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deb]:
    tmp = tmp_path_factory.mktemp("sdeb")
    home = tmp_path_factory.mktemp("lima-home")
    limactl = Limactl(home)
    rw = tmp / "rw"
    rw.mkdir()
    rw.chmod(0o777)  # the guest user writes here; 9p shows the host's owner and mode
    guest_port, host_port = free_port(), free_port()
    ro = tmp / "ro"
    ro.mkdir()
    (ro / "hello.txt").write_text("from the host\n")
    fields = {"memory": "1GiB", "mount_type": "9p", "ro": str(ro), "rw": str(rw),
              "guest_port": str(guest_port), "host_port": str(host_port)}
    yaml = tmp / f"{NAME}.yaml"
    yaml.write_text(SPEC.format(**fields))
    try:
        out = limactl("apply", "--timeout", "1500", str(yaml), timeout=1600)
        assert f"{NAME}: running" in out.stdout, out.stdout + out.stderr
        settle(limactl, NAME)
        yield Deb(limactl, yaml, fields, rw, host_port, guest_port)
        limactl("delete", "-f", NAME, timeout=300)
        assert not (home / NAME).exists()
        assert qemu_pids_for(home) == []
    finally:
        kill_leftovers(home)


def guest_clock_skew(d: Deb) -> float:
    before = time.time()
    out = d.sh("date -u +%s").stdout
    after = time.time()
    return int(out.strip()) + 0.5 - (before + after) / 2


def alive(d: Deb, pid: int) -> bool:
    out = d.sh(f"cat /proc/{pid}/cmdline 2>/dev/null | tr '\\0' ' '", check=False).stdout
    return "sleep 1000" in out


def mounts_work_both_ways(d: Deb, tag: str) -> None:
    assert d.sh("cat /mnt/ro/hello.txt").stdout == "from the host\n"
    (d.rw / f"host-{tag}.txt").write_text(f"host {tag}\n")
    assert d.sh(f"cat /mnt/rw/host-{tag}.txt").stdout == f"host {tag}\n"
    d.sh(f"echo 'guest {tag}' > /mnt/rw/guest-{tag}.txt")
    assert (d.rw / f"guest-{tag}.txt").read_text() == f"guest {tag}\n"


def test_a_busy_9p_mount_refuses_the_suspend(deb: Deb) -> None:
    """A process whose directory is in /mnt/rw: refused, naming it; nothing changed."""
    assert deb.mounted() == {"/mnt/ro", "/mnt/rw"}
    pid = int(deb.sh("cd /mnt/rw && { setsid sleep 1000 </dev/null >/dev/null 2>&1 & "
                     "echo $!; }").stdout)
    out = deb.limactl("suspend", NAME, timeout=300, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "/mnt/rw is in use in the guest" in out.stderr
    assert "QEMU cannot save a guest with a mounted 9p export" in out.stderr
    assert deb.status() == "Running"
    assert deb.saved() == set()
    assert deb.mounted() == {"/mnt/ro", "/mnt/rw"}  # the others were mounted again
    assert alive(deb, pid)
    mounts_work_both_ways(deb, "refused")
    deb.sh(f"kill {pid}")


def test_suspend_resume_keeps_process_file_clock_forward_and_mounts(deb: Deb) -> None:
    boot = deb.iid()
    pid = int(deb.sh("cd / && echo kept > /tmp/f && { setsid sleep 1000 </dev/null "
                     ">/dev/null 2>&1 & echo $!; }").stdout)
    deb.sh(f"cd /tmp && setsid python3 -m http.server {deb.guest_port} --bind 127.0.0.1 "
           "</dev/null >/dev/null 2>&1 &")
    assert until(lambda: http_ok(deb.host_port), "the forward before suspend", 60)

    out = deb.limactl("suspend", NAME, timeout=600)
    assert f"{NAME}: suspended" in out.stdout
    assert qemu_pids_for(deb.limactl.home) == []
    assert deb.saved() == {"suspend.state", "suspend.json"}
    log = (deb.limactl.home / NAME / "ha.stderr.log").read_text()  # the next start truncates it
    assert "unmounted /mnt/rw (9p) for the suspend" in log
    assert deb.status() == "Suspended"
    table = deb.limactl("list", NAME).stdout.splitlines()
    assert table[1].split()[:2] == [NAME, "Suspended"]

    time.sleep(4)  # the guest's clock stands still meanwhile
    started = deb.limactl("start", NAME, timeout=600)
    assert f"{NAME}: running" in started.stdout
    assert "resuming" in started.stderr and "booting" not in started.stderr
    assert deb.iid() == boot and deb.saved() == set()
    assert deb.status() == "Running"
    assert abs(guest_clock_skew(deb)) <= 2.0
    assert deb.sh("cat /tmp/f").stdout == "kept\n"
    assert alive(deb, pid)
    assert until(lambda: http_ok(deb.host_port), "the forward after resume", 60)
    assert deb.mounted() == {"/mnt/ro", "/mnt/rw"}
    mounts_work_both_ways(deb, "resumed")


def test_kill_hostagent_during_suspend_continues_then_suspends(deb: Deb) -> None:
    """As test_suspend_tiny's: the agent dies with the migration under way; the verb
    attaches a new agent, which continues the guest, mounts again, and suspends it."""
    home = deb.limactl.home
    agent = int((home / NAME / "ha.pid").read_text())
    env = {**os.environ, "LIMA_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "lima.cli", "suspend", NAME], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tmp = home / NAME / "suspend.state.tmp"
        deadline = time.monotonic() + 120
        while not tmp.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no temp file"
            time.sleep(0.001)
        os.kill(agent, signal.SIGKILL)
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert deb.status() == "Suspended"
    assert deb.saved() == {"suspend.state", "suspend.json"}
    assert "a suspend was cut short" in (home / NAME / "ha.stderr.log").read_text()
    deb.limactl("start", NAME, timeout=600)
    assert deb.sh("cat /tmp/f").stdout == "kept\n"
    mounts_work_both_ways(deb, "after-kill")


def snapshot_tags(deb: Deb) -> list[str]:
    return deb.limactl("snapshot", "list", NAME, "--quiet").stdout.splitlines()


def test_snapshots_of_the_debian_guest(deb: Deb) -> None:
    """Running with 9p mounted, QEMU refuses savevm (as on Lima), and nothing is left
    behind; stopped, a snapshot of the disk brings back a file the guest changed."""
    assert deb.mounted() == {"/mnt/ro", "/mnt/rw"}
    refused = deb.limactl("snapshot", "create", NAME, "--tag", "run1", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Migration is disabled when VirtFS export path" in refused.stderr
    assert deb.status() == "Running" and snapshot_tags(deb) == []

    path = "/var/tmp/limapy-snapshot"
    deb.sh(f"echo before > {path} && sync")
    deb.limactl("stop", NAME, timeout=300)
    deb.limactl("snapshot", "create", NAME, "--tag", "off1")
    assert snapshot_tags(deb) == ["off1"]
    deb.limactl("start", NAME, timeout=600)
    assert deb.sh(f"cat {path}").stdout == "before\n"
    deb.sh(f"echo after > {path} && sync")
    deb.limactl("stop", NAME, timeout=300)
    deb.limactl("snapshot", "apply", NAME, "--tag", "off1")
    deb.limactl("start", NAME, timeout=600)
    assert deb.sh(f"cat {path}").stdout == "before\n"
    assert deb.mounted() == {"/mnt/ro", "/mnt/rw"}
    deb.limactl("snapshot", "delete", NAME, "--tag", "off1")
    assert snapshot_tags(deb) == []


def test_spec_change_while_suspended_cold_boots(deb: Deb) -> None:
    boot = deb.iid()
    deb.limactl("suspend", NAME, timeout=600)
    deb.write(memory="1536MiB", mount_type="reverse-sshfs")
    (deb.limactl.home / NAME / "lima.yaml").write_text(deb.yaml.read_text())
    out = deb.limactl("start", NAME, timeout=1600)
    assert "lima.yaml changed since the instance was suspended" in out.stderr
    assert "boots afresh" in out.stderr
    assert deb.iid() != boot and deb.saved() == set()
    rec = json.loads(deb.limactl("list", "--format", "json", NAME).stdout)
    assert rec["memory"] == 1536 << 20
    assert deb.sh("cat /tmp/f", check=False).returncode != 0  # RAM is gone
    settle(deb.limactl, NAME)
    assert "fuse.sshfs" in deb.sh("awk '$2 == \"/mnt/rw\" {print $3}' /proc/mounts").stdout
    mounts_work_both_ways(deb, "sshfs")
