"""The reconcile loop under faults, on the FakeDriver and a FakeClock: a step whose effect
never shows (no spinning), a status.json the OS will not write (a stop still stops), and
OS errors from a driver step (a clear, named error, never an internal one)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.reconcile import MAX_REPEATS, StatusNotRecorded, reconcile_until
from lima.controller.status_store import StatusStore
from lima.states.actions import (
    Action,
    BuildCidata,
    CreateInstance,
    Outcome,
    StartHostAgent,
    StopInstance,
)
from lima.states.model import STALLED, DesiredState, RunState, Status
from lima.states.phases import Phase

SPEC: Any = object()
RUN = DesiredState(SPEC, "g1", RunState.RUNNING)
STOP = DesiredState(None, "g1", RunState.STOPPED)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def until(desired: DesiredState, driver: FakeDriver, clock: FakeClock, **kw: Any) -> Status:
    return reconcile_until("vm", desired, driver, StatusStore(), clock, **kw)


class Forgetful(FakeDriver):
    """A step that reports success, but whose effect the facts never show (a driver bug, or
    something outside undoing it, like a basedisk prepare that returns without a disk)."""

    forget: type = CreateInstance

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        out = super().execute(name, action, desired)
        if isinstance(action, self.forget):
            vm = self.vm(name)
            vm.created = vm.created and self.forget is not CreateInstance
            if self.forget is BuildCidata:
                vm.cidata_iid = None
        return out


@pytest.mark.parametrize("step", [CreateInstance, BuildCidata])
def test_a_step_without_effect_stalls_instead_of_spinning(
    step: type, clock: FakeClock, _isolated_home: Path
) -> None:
    driver = Forgetful(clock)
    driver.forget = step
    s = until(RUN, driver, clock, timeout=600)
    assert s.stalled
    assert [type(a) for a in driver.executed].count(step) == MAX_REPEATS
    assert len(driver.executed) <= MAX_REPEATS + 1  # (a CreateInstance before BuildCidata)
    assert s.last_error is not None
    assert s.last_error.startswith(f"no progress: {step.__name__} ran {MAX_REPEATS} times")
    assert "it succeeded each time" in s.last_error
    saved = json.loads((_isolated_home / "vm" / "status.json").read_text())
    stalled = [c for c in saved["conditions"] if c["type"] == STALLED]
    assert stalled[0]["status"] == "True" and stalled[0]["reason"] == "NoProgress"
    # The next pass of the controller holds still; a user asking again tries once more.
    driver.executed.clear()
    s = reconcile_until("vm", RUN, driver, StatusStore(), clock, rearm_first=False)
    assert s.stalled and driver.executed == []
    assert until(RUN, driver, clock).stalled and len(driver.executed) == MAX_REPEATS


def test_long_waits_are_progress_not_a_spin(clock: FakeClock) -> None:
    # Ten WaitSSH passes of 30 s each: the same step, the same "not yet", but each one a
    # retry closer to the phase deadline.
    driver = FakeDriver(clock, ssh_delay=280.0)
    s = until(RUN, driver, clock)
    assert s.phase is Phase.RUNNING and not s.stalled
    assert len(driver.executed) > 2 * MAX_REPEATS


def _disk_full(mp: pytest.MonkeyPatch) -> None:
    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(tempfile, "mkstemp", full)


def test_stop_on_a_full_disk_stops_the_vm_then_says_what_was_not_recorded(
    clock: FakeClock, _isolated_home: Path
) -> None:
    driver = FakeDriver(clock)
    assert until(RUN, driver, clock).phase is Phase.RUNNING
    before = (_isolated_home / "vm" / "status.json").read_text()
    driver.executed.clear()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(StatusNotRecorded) as info:
        _disk_full(mp)
        until(STOP, driver, clock)
    assert not driver.vm("vm").qemu_alive and not driver.vm("vm").agent_alive
    assert [type(a) for a in driver.executed] == [StopInstance]
    status_json = _isolated_home / "vm" / "status.json"
    assert str(info.value) == (
        f"instance 'vm' is stopped, but its status was not recorded: cannot write "
        f"{status_json}: No space left on device. Free space or make "
        f"{status_json.parent} writable, then run the command again"
    )
    assert info.value.status.phase is Phase.STOPPED
    assert status_json.read_text() == before  # the old record is intact, not half written
    # Space again: the next command records what the facts say.
    assert until(STOP, driver, clock).phase is Phase.STOPPED


def test_start_on_a_full_disk_fails_before_it_boots(
    clock: FakeClock, _isolated_home: Path
) -> None:
    driver = FakeDriver(clock)
    until(DesiredState(SPEC, "g1", RunState.STOPPED), driver, clock)  # created, not booted
    driver.executed.clear()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(StatusNotRecorded) as info:
        _disk_full(mp)
        until(RUN, driver, clock)
    assert StartHostAgent not in [type(a) for a in driver.executed]
    assert len(driver.executed) <= 1
    assert not driver.vm("vm").qemu_alive
    assert str(info.value).startswith(
        "instance 'vm' was not started further: its status cannot be recorded: cannot write ")
    assert "status.json: No space left on device" in str(info.value)


class RefusedWrites(FakeDriver):
    """A driver step whose write the OS refuses (the FakeDriver writes nothing itself)."""

    refuse: type = BuildCidata
    err: int = errno.ENOSPC

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        if isinstance(action, self.refuse):
            if isinstance(action, StopInstance):
                super().execute(name, action, desired)  # down, then a stale file stays
            else:
                self.executed.append(action)
            raise OSError(self.err, os.strerror(self.err), f"/h/{name}/file-of-the-step")
        return super().execute(name, action, desired)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_a_refused_write_in_a_boot_step_stalls_with_the_file_named(
    err: int, clock: FakeClock
) -> None:
    driver = RefusedWrites(clock)
    driver.err = err
    s = until(RUN, driver, clock)
    assert s.stalled and s.phase is Phase.FAILED
    assert s.last_error == f"BuildCidata: /h/vm/file-of-the-step: {os.strerror(err)}"
    assert [type(a) for a in driver.executed] == [CreateInstance, BuildCidata]


def test_a_refused_write_while_stopping_is_retried_and_the_facts_decide(
    clock: FakeClock,
) -> None:
    driver = RefusedWrites(clock)
    driver.refuse = StopInstance
    driver.err = errno.EROFS
    assert until(RUN, driver, clock).phase is Phase.RUNNING
    s = until(STOP, driver, clock)
    assert s.phase is Phase.STOPPED and not s.stalled
    assert not driver.vm("vm").qemu_alive
