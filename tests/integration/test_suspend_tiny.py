"""Suspend and resume on real QEMU with the fast `build:tiny` guest, through the real CLI:
a process, a file in /tmp, the clock and a port forward survive `suspend` + `start`; a
kill -9 of limactl, of the host agent or of qemu during a suspend leaves a consistent
instance; a spec changed while suspended gives a warning and a cold boot. (The tiny guest
has no `nohup`: its background process is started with `setsid`, which detaches it from
the session as well.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for
from tests.integration.test_portfwd import free_port, talk, until


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    f = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    return f


def record(limactl: Limactl) -> dict[str, object]:
    rec: dict[str, object] = json.loads(limactl("list", "--format", "json", "t").stdout)
    return rec


def iid(limactl: Limactl) -> str:
    return str(json.loads((limactl.home / "t" / "status.json").read_text())["iid"])


def guest_clock_skew(limactl: Limactl) -> float:
    before = time.time()
    out = limactl("shell", "t", "date", "-u", "+%s").stdout
    after = time.time()
    return int(out.strip()) + 0.5 - (before + after) / 2


def saved_files(home: Path) -> set[str]:
    return {p.name for p in (home / "t").iterdir() if p.name.startswith("suspend")}


def prepare_guest(limactl: Limactl, nc_port: int | None = None) -> None:
    script = ("echo kept > /tmp/f; setsid sleep 1000 </dev/null >/dev/null 2>&1 &"
              + (f" setsid nc -ll -p {nc_port} -e echo forwarded </dev/null >/dev/null 2>&1 &"
                 if nc_port else ""))
    limactl("shell", "t", "sh", "-c", script)


def sleep_alive(limactl: Limactl) -> bool:
    out = limactl("shell", "t", "ps", check=False).stdout
    return "sleep 1000" in out


def test_suspend_resume_keeps_process_file_clock_and_forward(
        limactl: Limactl, tiny_yaml: Path) -> None:
    nc_port = free_port()
    limactl("apply", str(tiny_yaml), timeout=300)
    boot = iid(limactl)
    prepare_guest(limactl, nc_port)
    assert until(lambda: talk(nc_port) == b"forwarded\n", "the forward before suspend", 20)

    out = limactl("suspend", "t", timeout=120)
    assert "t: suspended" in out.stdout
    assert qemu_pids_for(limactl.home) == []
    assert saved_files(limactl.home) == {"suspend.state", "suspend.json"}
    meta = json.loads((limactl.home / "t" / "suspend.json").read_text())
    assert meta["iid"] == boot and meta["qemuVersion"].count(".") == 2
    assert any(d.endswith("/diffdisk") for d in meta["disks"])
    assert meta["qemuBinary"].endswith("qemu-system-x86_64")
    rec = record(limactl)
    assert rec["status"] == "Suspended"
    assert "Suspended" in limactl("list", "t").stdout
    # Lima's JSON shape: the same keys as for a stopped instance.
    assert {"name", "status", "dir", "cpus", "memory"} <= set(rec)

    time.sleep(4)  # the guest's clock stands still meanwhile
    started = limactl("start", "t", timeout=120)
    assert "t: running" in started.stdout
    assert "resuming" in started.stderr and "booting" not in started.stderr
    assert iid(limactl) == boot  # the same boot: nothing booted again
    assert saved_files(limactl.home) == set()
    assert limactl("shell", "t", "cat", "/tmp/f").stdout == "kept\n"
    assert sleep_alive(limactl)
    assert abs(guest_clock_skew(limactl)) <= 2.0
    assert until(lambda: talk(nc_port) == b"forwarded\n", "the forward after resume", 20)
    assert record(limactl)["status"] == "Running"

    limactl("stop", "t", timeout=120)
    assert qemu_pids_for(limactl.home) == []


def test_spec_change_while_suspended_cold_boots(limactl: Limactl, tiny_yaml: Path) -> None:
    limactl("apply", str(tiny_yaml), timeout=300)
    boot = iid(limactl)
    prepare_guest(limactl)
    limactl("suspend", "t", timeout=120)
    tiny_yaml.write_text(tiny_yaml.read_text() + "cpus: 2\n")
    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "lima.yaml changed since the instance was suspended" in out.stderr
    assert "boots afresh" in out.stderr
    assert iid(limactl) != boot
    assert saved_files(limactl.home) == set()
    assert record(limactl)["cpus"] == 2
    assert limactl("shell", "t", "cat", "/tmp/f", check=False).returncode != 0  # RAM is gone
    limactl("stop", "t", timeout=120)


def _suspend_in_background(limactl: Limactl) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LIMA_HOME": str(limactl.home)}
    return subprocess.Popen([sys.executable, "-m", "lima.cli", "suspend", "t"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_temp(home: Path, proc: subprocess.Popen[bytes]) -> bool:
    tmp = home / "t" / "suspend.state.tmp"
    deadline = time.monotonic() + 30
    while not tmp.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_kill_limactl_during_suspend_leaves_a_saved_state(
        limactl: Limactl, tiny_yaml: Path) -> None:
    limactl("apply", str(tiny_yaml), timeout=300)
    prepare_guest(limactl)
    proc = _suspend_in_background(limactl)
    try:
        assert _wait_for_temp(limactl.home, proc), "the suspend never wrote its temp file"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    # The host agent finishes the suspend on its own: a complete saved state, nothing runs.
    until(lambda: record(limactl)["status"] == "Suspended", "the suspend to finish", 30)
    assert saved_files(limactl.home) == {"suspend.state", "suspend.json"}
    assert qemu_pids_for(limactl.home) == []
    # `shell --start=false` refuses a suspended instance, naming it; `shell` resumes it.
    refused = limactl("shell", "--start=false", "t", "true", check=False)
    assert refused.returncode == 1 and "suspended" in refused.stderr
    woken = limactl("shell", "t", "cat", "/tmp/f", timeout=120)
    assert woken.stdout == "kept\n" and "resuming" in woken.stderr
    limactl("stop", "t", timeout=120)


def test_kill_hostagent_during_suspend_continues_then_suspends(
        limactl: Limactl, tiny_yaml: Path) -> None:
    """The agent dies with the guest paused and the migration under way: the verb attaches
    a new agent, which continues the guest, and suspends it again."""
    limactl("apply", str(tiny_yaml), timeout=300)
    prepare_guest(limactl)
    agent = int((limactl.home / "t" / "ha.pid").read_text())
    proc = _suspend_in_background(limactl)
    try:
        assert _wait_for_temp(limactl.home, proc), "the suspend never wrote its temp file"
        os.kill(agent, signal.SIGKILL)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert record(limactl)["status"] == "Suspended"
    assert saved_files(limactl.home) == {"suspend.state", "suspend.json"}
    log = (limactl.home / "t" / "ha.stderr.log").read_text()
    assert "a suspend was cut short" in log
    limactl("start", "t", timeout=120)
    assert limactl("shell", "t", "cat", "/tmp/f").stdout == "kept\n"
    limactl("stop", "t", timeout=120)


def test_kill_qemu_during_suspend_leaves_a_stopped_instance(
        limactl: Limactl, tiny_yaml: Path) -> None:
    limactl("apply", str(tiny_yaml), timeout=300)
    boot = iid(limactl)
    proc = _suspend_in_background(limactl)
    try:
        assert _wait_for_temp(limactl.home, proc), "the suspend never wrote its temp file"
        pid = int((limactl.home / "t" / "qemu.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # it says the state was not saved
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "suspend.state" not in saved_files(limactl.home)  # never a half state as a state
    assert record(limactl)["status"] == "Stopped"
    limactl("start", "t", timeout=300)  # a cold boot, and the leftover temp is gone
    assert iid(limactl) != boot
    assert saved_files(limactl.home) == set()
    limactl("stop", "t", timeout=120)
