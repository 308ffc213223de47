"""The QEMU driver pieces against a real qemu-system-x86_64: the KVM probe, an instance
booted from `qemu_argv` and stopped through QMP, and the PID safety of the kill helpers.

Every process started here is ended in a `finally` by its own PID.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.drivers import accel, procs, qemu, qmp, runner
from lima.schemas.spec import InstanceSpec, QemuOptions, SSHConfig, User

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or platform.machine() != "x86_64",
    reason="needs qemu-system-x86_64 on an x86_64 host",
)

# On the machines this project runs on, /dev/kvm exists but cannot run a guest
# (GUEST-NOTES.md); set LIMA_TEST_EXPECT_ACCEL=kvm where KVM works.
EXPECTED_ACCEL = os.environ.get("LIMA_TEST_EXPECT_ACCEL", "tcg")


def tiny_spec(name: str = "t", **kw: object) -> InstanceSpec:
    return InstanceSpec(
        name=name,
        vm_type="qemu",
        os="Linux",
        arch="x86_64",
        images=(),
        cpus=1,
        memory=256 * 1024**2,
        disk=1024**3,
        mounts=(),
        mount_type="reverse-sshfs",
        ssh=SSHConfig(),
        user=User("u", 1000, "", "/home/u.linux", "/bin/sh"),
        qemu=QemuOptions(restrict_network=True),
        firmware_legacy_bios=True,  # no kernel here: SeaBIOS, nothing to boot
        **kw,  # type: ignore[arg-type]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inst(_isolated_home: Path) -> Path:
    d = _isolated_home / "t"
    d.mkdir(parents=True)
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", d / "diffdisk", "64M"])
    (d / "cidata.iso").write_bytes(b"\0" * 65536)
    return d


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each one is killed by its PID and reaped afterwards."""
    procs_started: list[subprocess.Popen[bytes]] = []
    try:
        yield procs_started
    finally:
        for p in procs_started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def spawn_qemu(
    argv: list[str], inst: Path, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    with (inst / "qemu.stderr").open("wb") as err:
        proc = runner.spawn(argv, stdout=subprocess.DEVNULL, stderr=err)
    started.append(proc)
    return proc


def wait_status(sock: Path, proc: subprocess.Popen[bytes], inst: Path) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"qemu exited {proc.returncode}: {(inst / 'qemu.stderr').read_text()}")
        status = qmp.query_status(sock, timeout=1)
        if status is not None:
            return status
        time.sleep(0.05)
    pytest.fail("QMP never answered")


# ---- (a) the real KVM probe --------------------------------------------------------------


def test_real_probe_decides_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(accel.ENV_FORCE, raising=False)
    monkeypatch.delenv("QEMU_SYSTEM_X86_64", raising=False)
    first = accel.detect_accel("x86_64")  # returns: the probe enforces its own deadline
    assert first.name == EXPECTED_ACCEL
    assert first.reason
    second = accel.detect_accel("x86_64")
    assert (second.name, second.reason) == (first.name, first.reason)
    if accel.KVM_DEVICE.exists() and os.access(accel.KVM_DEVICE, os.R_OK | os.W_OK):
        assert second.cached  # /dev/kvm usable: the answer came from a probe, now cached


@pytest.mark.skipif(
    EXPECTED_ACCEL != "tcg" or not os.access("/dev/kvm", os.R_OK | os.W_OK),
    reason="needs a /dev/kvm that opens but cannot run guests",
)
def test_probe_kills_a_guest_that_hangs_under_kvm() -> None:
    # -cpu kvm64 gets past QEMU's MSR setup here and then hangs inside KVM: only the
    # deadline ends it. The call must come back with a verdict, not hang.
    works, reason = accel.probe_kvm(qemu.qemu_binary("x86_64"), "kvm64", deadline=2.0)
    assert works is False
    assert reason


# ---- (b) an instance booted from qemu_argv, driven through QMP ---------------------------


def test_qemu_from_argv_runs_and_stops_through_qmp(
    inst: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    argv = qemu.qemu_argv(
        tiny_spec(), inst, ssh_port=port, accel="tcg", binary=qemu.qemu_binary("x86_64")
    )
    proc = spawn_qemu(argv, inst, started)
    sock = inst / "qmp.sock"
    assert wait_status(sock, proc, inst) == "running"
    assert procs.qemu_pid(inst) == proc.pid
    assert (inst / "serial.sock").exists() and (inst / "ga.sock").exists()
    # The ssh forward listens on loopback (slirp accepts even with nothing in the guest).
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

    with qmp.QMPClient(sock, timeout=5) as client:
        client.execute("stop")
        assert client.execute("query-status")["status"] == "paused"
        client.execute("cont")
        assert client.execute("query-status")["status"] == "running"
        with pytest.raises(qmp.QMPError):
            client.execute("no-such-command")

    # No OS handles the ACPI power button here: powerdown reports that qemu still runs.
    assert qmp.powerdown(inst, timeout=1.0) is False
    assert proc.poll() is None
    assert qmp.quit(inst, timeout=10) is True
    assert proc.wait(timeout=10) == 0
    assert procs.qemu_pid(inst) is None
    assert qmp.query_status(sock, timeout=0.5) is None


def test_override_binary_forces_tcg_and_kill_stops_qemu(
    inst: Path, started: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `-accel tcg` in the override must win over accel="kvm" (KVM cannot start here), and
    # `-S` keeps the CPUs stopped: QMP says "prelaunch".
    monkeypatch.setenv("QEMU_SYSTEM_X86_64", "qemu-system-x86_64 -accel tcg -S")
    binary = qemu.qemu_binary("x86_64")
    argv = qemu.qemu_argv(tiny_spec(), inst, ssh_port=free_port(), accel="kvm", binary=binary)
    proc = spawn_qemu(argv, inst, started)
    assert wait_status(inst / "qmp.sock", proc, inst) == "prelaunch"
    assert procs.kill_qemu(inst, force=False, timeout=5) is True
    proc.wait(timeout=10)
    assert procs.qemu_pid(inst) is None


def test_kill_qemu_never_signals_a_recycled_pid(
    inst: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    stranger = runner.spawn(["sleep", "30"])
    started.append(stranger)
    (inst / "qemu.pid").write_text(f"{stranger.pid}\n")
    assert procs.qemu_pid(inst) is None
    assert procs.kill_qemu(inst, force=True) is True  # no qemu of ours is running
    time.sleep(0.1)
    assert stranger.poll() is None  # and the stranger was left alone


def test_zombie_counts_as_dead(started: list[subprocess.Popen[bytes]]) -> None:
    child = runner.spawn(["true"])
    started.append(child)
    deadline = time.monotonic() + 5
    # Not reaped yet (no poll/wait): the exited child lingers as a zombie.
    while procs._proc_state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procs._proc_state(child.pid) == "Z"
    assert procs.pid_alive(child.pid) is False
    assert procs.wait_exit(child.pid, 0.1) is True
