"""Scenario tables (a lifecycle, a failed provisioning), each run against both drivers:
the FakeDriver the reconciler's component tests use (lima/controller/fake.py) and the real
QemuDriver (lima/drivers/instance.py).
After each event both must report the same ObservedState (REVIEW.md C2): the fake may not
see a world the real driver cannot.

The real driver runs for real: CreateInstance (qemu-img over a 1 MiB image), BuildCidata,
`limactl hostagent` as a daemon, ssh readiness over paramiko. Only qemu is a stand-in
(`qemu_command` is replaced): the Python interpreter under the name `qemu-system-x86_64`
running FAKE_QEMU, which writes its -pidfile (so /proc checks take it for this instance's
qemu) and then serves the guest's IID markers with tests/component/fake_sshd.py. Two gate
files hold the guest back, so "ssh ready" and "provisioned" are events the test chooses,
as the FakeClock's delays are for the fake.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import paramiko
import pytest

from lima import paths, schemas
from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.drivers import procs
from lima.drivers.hostagent import stop_hostagent
from lima.drivers.instance import QemuDriver
from lima.states.actions import (
    Action,
    BuildCidata,
    CreateInstance,
    MarkRunning,
    StartHostAgent,
    StopInstance,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.model import DesiredState, ObservedState, RunState

NAME = "sc"
IID = "iid-scenario-1"
FAKE_SSHD = Path(__file__).with_name("fake_sshd.py")

# The stand-in qemu: argv is `-pidfile PATH -qmp SOCK -gates DIR -ssh PORT IID PUBKEY MODE`
# (MODE is fake_sshd's: "ok", or "failed" when a provisioning script failed).
# Its QMP socket answers every command; system_powerdown or quit make it exit, as a guest
# that obeys the power button does.
FAKE_QEMU = """
import json, os, socket, sys, threading, time
from pathlib import Path
args = sys.argv[1:]
pidfile, gates = args[args.index("-pidfile") + 1], Path(args[args.index("-gates") + 1])
port, iid, pubkey, mode = args[args.index("-ssh") + 1: args.index("-ssh") + 5]

def qmp(conn):
    conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\\n')
    for line in conn.makefile("rb"):
        msg = json.loads(line)
        conn.sendall(json.dumps({"return": {}, "id": msg.get("id")}).encode() + b"\\n")
        if msg.get("execute") in ("system_powerdown", "quit"):
            os._exit(0)

def serve_qmp(path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    while True:
        threading.Thread(target=qmp, args=(listener.accept()[0],), daemon=True).start()

qmp_path = args[args.index("-qmp") + 1]
if os.path.exists(qmp_path):
    os.unlink(qmp_path)
threading.Thread(target=serve_qmp, args=(qmp_path,), daemon=True).start()
Path(pidfile).write_text(f"{os.getpid()}\\n")
while not (gates / "ssh").exists():  # the guest is still booting
    time.sleep(0.05)
sys.path.insert(0, os.environ["FAKE_SSHD_DIR"])
import fake_sshd
served = fake_sshd.Server.answer
def answer(self, channel, command):
    if command == "true":  # the host agent's heartbeat
        channel.send_exit_status(0)
        channel.close()
    elif "lima-boot-" in command and not command.startswith("r=; d=; f=;") \\
            and not (gates / "provision").exists():
        served(self, channel, "cat /run/not-yet")  # provisioning still runs
    else:
        served(self, channel, command)
fake_sshd.Server.answer = answer
markers = fake_sshd.Server.markers
def markers_now(self):  # provisioning still runs: no boot-done nor boot-failed yet
    found = markers(self)
    if not (gates / "provision").exists():
        found = {**found, "boot-done": None, "boot-failed": None}
    return found
fake_sshd.Server.markers = markers_now
sys.argv = ["fake_sshd", port, iid, pubkey, mode]
fake_sshd.main()
"""


class Harness(Protocol):
    driver: Any

    def open_gate(self, gate: str) -> None: ...
    def kill_qemu(self) -> None: ...
    def kill_agent(self) -> None: ...
    def fail_provisioning(self) -> None: ...


# --- the table ---------------------------------------------------------------------------
# Each row: an event (what the harness does, then the actions executed, each of which must
# succeed) and the ObservedState both drivers must then report.

DOWN = dict(dir_exists=True, has_lima_yaml=True, disks_ready=True, cidata_iid=IID,
            hostagent_pid_alive=False, qemu_pid_alive=False, markers_read=False,
            ssh_ready_iid=None, boot_done_iid=None, agent_errors=(), guest_responsive=True,
            # suspend/resume: the stand-in qemu cannot migrate (tests/integration covers it)
            saved_generation=None, saved_stale="", suspending=False, resuming=False)
UP = {**DOWN, "hostagent_pid_alive": True, "qemu_pid_alive": True, "markers_read": True}
READY = {**UP, "ssh_ready_iid": IID}
RUNNING = {**READY, "boot_done_iid": IID}

Step = tuple[str, Callable[[Harness], None], tuple[Action, ...], dict[str, Any]]


def nothing(h: Harness) -> None:
    pass


SCENARIO: tuple[Step, ...] = (
    ("created", nothing, (CreateInstance(), BuildCidata(IID)), DOWN),
    ("booted: qemu and host agent alive", nothing, (StartHostAgent(IID),), UP),
    ("ssh ready", lambda h: h.open_gate("ssh"), (WaitSSH(IID, 30),), READY),
    ("provisioned and running", lambda h: h.open_gate("provision"),
     (WaitProvisioned(IID, 30), MarkRunning(IID, 30)), RUNNING),
    # qemu runs on, unwatched: nothing reads the guest's markers any more.
    ("host agent killed", lambda h: h.kill_agent(), (), {**UP, "hostagent_pid_alive": False,
                                                         "markers_read": False}),
    ("a new host agent attached", nothing,
     (StartHostAgent(IID, attach=True), WaitProvisioned(IID, 30), MarkRunning(IID, 30)),
     RUNNING),
    # The host agent notices and exits: everything is down, the disks stay.
    ("qemu killed", lambda h: h.kill_qemu(), (), DOWN),
    ("booted again", nothing,
     (StartHostAgent(IID), WaitSSH(IID, 30), WaitProvisioned(IID, 30), MarkRunning(IID, 30)),
     RUNNING),
    ("stopped", nothing, (StopInstance(force=False),), DOWN),
)

# A provisioning script fails: the boot still counts as done (the host agent reports it
# running, degraded) and the failure is among the agent's errors.
FAILED = "provisioning failed: provision.system/00: exit 1"
PROVISION_FAILS: tuple[Step, ...] = (
    ("created", lambda h: h.fail_provisioning(), (CreateInstance(), BuildCidata(IID)), DOWN),
    ("booted", nothing, (StartHostAgent(IID),), UP),
    ("ssh ready", lambda h: h.open_gate("ssh"), (WaitSSH(IID, 30),), READY),
    ("provisioning failed", lambda h: h.open_gate("provision"),
     (WaitProvisioned(IID, 30), MarkRunning(IID, 30)), {**RUNNING, "agent_errors": (FAILED,)}),
    ("stopped", nothing, (StopInstance(force=False),), DOWN),
)
SCENARIOS = {"lifecycle": SCENARIO, "provision-fails": PROVISION_FAILS}


# --- the two harnesses -------------------------------------------------------------------

@dataclasses.dataclass
class FakeHarness:
    driver: FakeDriver

    def open_gate(self, gate: str) -> None:
        pass  # the fake's clock runs to the moment inside the wait actions

    def kill_qemu(self) -> None:
        self.driver.kill_qemu(NAME)

    def kill_agent(self) -> None:
        self.driver.kill_agent(NAME)

    def fail_provisioning(self) -> None:
        self.driver.provision_error = FAILED.removeprefix("provisioning failed: ")


@dataclasses.dataclass
class RealHarness:
    driver: QemuDriver
    gates: Path
    mode: str = "ok"  # fake_sshd's

    def open_gate(self, gate: str) -> None:
        (self.gates / gate).touch()

    def kill_qemu(self) -> None:
        pid = procs.qemu_pid(paths.instance_dir(NAME))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    def kill_agent(self) -> None:
        pid = procs.hostagent_pid(paths.instance_dir(NAME))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    def fail_provisioning(self) -> None:
        self.mode = "failed"


def document(tmp_path: Path) -> Path:
    """The instance's lima.yaml: a 1 MiB raw image, nothing mounted (a mount would need a
    real guest)."""
    image = tmp_path / "base.img"
    image.write_bytes(b"\0" * (1 << 20))
    doc = tmp_path / f"{NAME}.yaml"
    # legacyBIOS: an attaching host agent builds the qemu command too; no UEFI here.
    doc.write_text(f"images:\n- location: {image}\n  arch: x86_64\nmounts: []\n"
                   "firmware:\n  legacyBIOS: true\n")
    return doc


def desired_state(doc: Path) -> DesiredState:
    resolved = schemas.resolve(str(doc), name=NAME)
    return DesiredState(resolved.spec, schemas.generation(resolved.filled), RunState.RUNNING,
                        document=doc.read_text())


@pytest.fixture(params=["fake", "real"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, _isolated_home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if request.param == "fake":
        yield FakeHarness(FakeDriver(FakeClock()))
        return
    bindir = tmp_path / "bin"
    bindir.mkdir()
    qemu = bindir / "qemu-system-x86_64"
    qemu.symlink_to(os.path.realpath(sys.executable))
    script = tmp_path / "fake_qemu.py"
    script.write_text(FAKE_QEMU)
    gates = tmp_path / "gates"
    gates.mkdir()
    # The renamed interpreter is outside the venv: it finds paramiko through PYTHONPATH.
    site = str(Path(paramiko.__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        site, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FAKE_SSHD_DIR", str(FAKE_SSHD.parent))
    monkeypatch.setenv("LIMA_QEMU_ACCEL", "tcg")  # no KVM probe: qemu is a stand-in

    real = RealHarness(QemuDriver(), gates)

    def fake_qemu_command(spec: object, inst: Path, port: int, *_disks: object,
                          **_kw: object) -> list[str]:
        pubkey = paths.user_identity().with_name(paths.user_identity().name + ".pub")
        return [str(qemu), str(script), "-pidfile", str(inst / paths.QEMU_PID),
                "-qmp", str(inst / paths.QMP_SOCK),
                "-gates", str(gates), "-ssh", str(port), IID, str(pubkey), real.mode]

    monkeypatch.setattr("lima.drivers.instance.qemu_command", fake_qemu_command)
    yield real
    inst = paths.instance_dir(NAME)
    stop_hostagent(inst, force=True)
    pid = procs.qemu_pid(inst)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


def settled(driver: Any, want: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    """The observed fields once they equal `want`, or at `timeout` (the real host agent
    takes a moment to notice a killed qemu; the fake answers at once)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = dataclasses.asdict(driver.observe(NAME))
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def test_table_covers_every_observed_field() -> None:
    fields = {f.name for f in dataclasses.fields(ObservedState)}
    for steps in SCENARIOS.values():
        for event, _, _, want in steps:
            assert set(want) == fields, event


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario(harness: Harness, scenario: str, tmp_path: Path) -> None:
    desired = desired_state(document(tmp_path))
    assert dataclasses.asdict(harness.driver.observe(NAME)) == dataclasses.asdict(
        ObservedState())
    for event, do, actions, want in SCENARIOS[scenario]:
        do(harness)
        for action in actions:
            out = harness.driver.execute(NAME, action, desired)
            assert out.ok, f"{event}: {action!r} failed: {out.error}"
        assert settled(harness.driver, want) == want, event
