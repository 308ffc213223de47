"""A forced stop or delete from another process interrupts a converging apply/start.

`converge` (the verbs' path into the reconciler) runs against the FakeDriver on a
FakeClock, holding the real instance lock in a private LIMA_HOME; the "other process" is a
real `python` process that records its request with `lock.write_request`, as `limactl
stop -f` / `delete -f` do before killing the VM. The old code rebooted the VM after the
crash backoff and reported success.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lima.commands.lifecycle import converge
from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.lock import superseded_by, write_request
from lima.controller.reconcile import Superseded, reconcile_until
from lima.controller.status_store import StatusStore
from lima.errors import LimaError
from lima.states.actions import Action, Outcome, StartHostAgent, WaitProvisioned, WaitSSH
from lima.states.model import DesiredState, RunState

SPEC: Any = object()


def request_from_another_process(name: str, run_state: str, command: str) -> int:
    """Record a request the way another limactl does; returns that process's PID."""
    code = ("import sys\nfrom lima.controller.lock import write_request\n"
            "write_request(sys.argv[1], sys.argv[2], sys.argv[3])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, name, run_state, command],
                            env=dict(os.environ))
    assert proc.wait(timeout=60) == 0
    return proc.pid


class KilledMidBoot(FakeDriver):
    """While the guest boots, another process records `request` and kills the VM (as
    `limactl stop -f` / `delete -f` do, without the lock)."""

    def __init__(self, clock: FakeClock, run_state: str, command: str,
                 at: type[Action] = WaitSSH) -> None:
        super().__init__(clock)
        self.request = (run_state, command)
        self.at = at
        self.killer_pid = 0

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        if isinstance(action, self.at) and not self.killer_pid:
            self.killer_pid = request_from_another_process(name, *self.request)
            self.kill_qemu(name)
        return super().execute(name, action, desired)


@pytest.mark.parametrize(("run_state", "command", "what"), [
    ("stopped", "limactl stop -f", "stopped"),
    ("absent", "limactl delete -f", "deleted"),
    ("stopped", "limactl stop", "stopped"),
])
def test_apply_gives_up_when_another_process_stops_it(
    run_state: str, command: str, what: str, _isolated_home: Path
) -> None:
    clock = FakeClock()
    driver = KilledMidBoot(clock, run_state, command)
    with pytest.raises(LimaError) as exc:
        converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock)
    assert str(exc.value) == (
        f"instance vm was {what} by `{command}` (PID {driver.killer_pid}) while this "
        "apply ran")
    vm = driver.vm("vm")
    assert vm.boots == 1 and not vm.qemu_alive  # never booted again
    after_kill = driver.executed[[type(a) for a in driver.executed].index(WaitSSH):]
    assert not any(isinstance(a, StartHostAgent) for a in after_kill)
    # It gave up at once: no crash backoff was waited out.
    assert sum(clock.slept) < 5


def test_start_names_itself(_isolated_home: Path) -> None:
    clock = FakeClock()
    driver = KilledMidBoot(clock, "stopped", "limactl stop -f", at=WaitProvisioned)
    with pytest.raises(LimaError, match=r"while this start ran$"):
        converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock,
                 verb="start")


def test_a_newer_apply_does_not_interrupt(_isolated_home: Path) -> None:
    """Another `apply` only queues behind the lock: this one boots on."""
    clock = FakeClock()
    driver = KilledMidBoot(clock, "running", "limactl apply")
    actions = converge("vm", "running", spec=SPEC, generation="g1", driver=driver,
                       clock=clock)
    assert "StartHostAgent" in actions and driver.vm("vm").qemu_alive
    assert driver.vm("vm").boots == 2  # the kill is recovered from, as before


class StopDuringBackoff(FakeClock):
    """Another process asks for a stop while the apply waits out a crash backoff."""

    def __init__(self, name: str, after: float) -> None:
        super().__init__()
        self.name, self.after, self.pid = name, after, 0
        self.waited = 0.0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.waited += seconds
        if not self.pid and self.waited >= self.after:
            self.pid = request_from_another_process(self.name, "absent", "limactl delete -f")


def test_request_during_a_backoff_wait_ends_it(_isolated_home: Path) -> None:
    clock = StopDuringBackoff("vm", after=30.0)
    driver = FakeDriver(clock, qemu_dies_after=2.0)  # a crash loop: long backoff waits
    desired = DesiredState(SPEC, "g1", RunState.RUNNING)
    mine = write_request("vm", "running", "limactl apply")

    def superseded() -> str | None:
        newer = superseded_by("vm", mine)
        return f"taken over by {newer.pid}" if newer else None

    with pytest.raises(Superseded) as exc:
        reconcile_until("vm", desired, driver, StatusStore(), clock, timeout=3600,
                        superseded=superseded)
    assert str(exc.value) == f"taken over by {clock.pid}"
    # Noticed within one poll of the request, not at the end of the backoff.
    assert clock.waited - 30.0 < 1.0
    assert driver.vm("vm").boots >= 1 and not driver.vm("vm").qemu_alive


def test_superseded_before_the_first_pass_does_nothing(_isolated_home: Path) -> None:
    clock = FakeClock()
    driver = FakeDriver(clock)
    with pytest.raises(Superseded, match="gone"):
        reconcile_until("vm", DesiredState(SPEC, "g1", RunState.RUNNING), driver,
                        StatusStore(), clock, superseded=lambda: "gone")
    assert driver.executed == []
