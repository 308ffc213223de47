"""Suspend and resume through the reconciler, against the FakeDriver on a FakeClock."""

from __future__ import annotations

from typing import Any

import pytest

from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.reconcile import reconcile_until
from lima.controller.status_store import StatusStore
from lima.states.actions import (
    BuildCidata,
    DiscardSavedState,
    MarkRunning,
    ResumeInstance,
    StartHostAgent,
    StopInstance,
    SuspendInstance,
    WaitResumed,
)
from lima.states.model import READY, DesiredState, RunState, Status
from lima.states.phases import Phase

pytestmark = pytest.mark.component

SPEC: Any = object()
RUN = DesiredState(SPEC, "g1", RunState.RUNNING)
SLEEP = DesiredState(None, "g1", RunState.SUSPENDED)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def driver(clock: FakeClock) -> FakeDriver:
    return FakeDriver(clock)


def until(desired: DesiredState, driver: FakeDriver, clock: FakeClock) -> Status:
    return reconcile_until("vm", desired, driver, StatusStore(), clock, timeout=600)


def running(driver: FakeDriver, clock: FakeClock) -> Status:
    s = until(RUN, driver, clock)
    assert s.phase is Phase.RUNNING
    driver.executed.clear()
    return s


def test_suspend_then_resume_is_the_same_boot(driver: FakeDriver, clock: FakeClock) -> None:
    booted = running(driver, clock)
    s = until(SLEEP, driver, clock)
    assert s.phase is Phase.SUSPENDED
    assert driver.executed == [SuspendInstance()]
    assert not driver.vm("vm").qemu_alive
    s = until(SLEEP, driver, clock)  # asked again: nothing to do
    assert driver.executed == [SuspendInstance()]

    driver.executed.clear()
    t0 = clock.now()
    s = until(RUN, driver, clock)
    assert s.phase is Phase.RUNNING and s.is_true(READY)
    assert [type(a) for a in driver.executed] == [ResumeInstance, WaitResumed, MarkRunning]
    assert s.iid == booted.iid and driver.vm("vm").boots == 1  # no boot happened
    assert clock.now() - t0 <= driver.resume_delay + 1  # not a cold boot's 15 s


def test_spec_changed_while_suspended_cold_boots(driver: FakeDriver, clock: FakeClock) -> None:
    booted = running(driver, clock)
    until(SLEEP, driver, clock)
    driver.executed.clear()
    s = until(DesiredState(SPEC, "g2", RunState.RUNNING), driver, clock)
    assert s.phase is Phase.RUNNING
    kinds = [type(a) for a in driver.executed]
    assert kinds[:3] == [DiscardSavedState, BuildCidata, StartHostAgent]
    assert ResumeInstance not in kinds
    assert s.iid != booted.iid and driver.vm("vm").boots == 2


def test_stale_saved_state_is_discarded(driver: FakeDriver, clock: FakeClock) -> None:
    running(driver, clock)
    until(SLEEP, driver, clock)
    driver.saved_stale = "the QEMU binary changed since the instance was suspended"
    driver.executed.clear()
    s = until(RUN, driver, clock)
    assert s.phase is Phase.RUNNING
    assert driver.executed[0] == DiscardSavedState(driver.saved_stale)
    assert driver.vm("vm").saved_generation is None


def test_stop_of_a_suspended_instance_wakes_it_to_shut_down(
        driver: FakeDriver, clock: FakeClock) -> None:
    running(driver, clock)
    until(SLEEP, driver, clock)
    driver.executed.clear()
    s = until(DesiredState(None, "g1", RunState.STOPPED), driver, clock)
    assert s.phase is Phase.STOPPED
    kinds = [type(a) for a in driver.executed]
    assert kinds[0] is ResumeInstance and kinds[-1] is StopInstance
    assert driver.vm("vm").saved_generation is None


def test_resume_status_survives_a_restart_of_the_verb(
        driver: FakeDriver, clock: FakeClock) -> None:
    """The phase comes from facts: a new process sees `suspended` with no status.json."""
    running(driver, clock)
    until(SLEEP, driver, clock)
    StatusStore().path("vm").unlink()
    s = until(RUN, driver, clock)
    assert s.phase is Phase.RUNNING and driver.vm("vm").resumes == 1
