"""The reconcile loop against the FakeDriver on a FakeClock: nothing sleeps for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lima import paths
from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.reconcile import (
    WaitTimeout,
    reconcile_once,
    reconcile_pass,
    reconcile_until,
)
from lima.controller.status_store import StatusStore
from lima.states.actions import (
    Abort,
    BuildCidata,
    CreateInstance,
    DeleteInstance,
    Done,
    MarkRunning,
    StartHostAgent,
    StopInstance,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.model import DEGRADED, READY, DesiredState, RunState, Status
from lima.states.phases import Phase
from lima.states.policy import PHASE_DEADLINES

SPEC: Any = object()
RUN = DesiredState(SPEC, "g1", RunState.RUNNING)
STOP = DesiredState(None, "g1", RunState.STOPPED)
GONE = DesiredState(None, "g1", RunState.ABSENT)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def driver(clock: FakeClock) -> FakeDriver:
    return FakeDriver(clock)


def until(name: str, desired: DesiredState, driver: FakeDriver, clock: FakeClock,
          **kw: Any) -> Status:
    return reconcile_until(name, desired, driver, StatusStore(), clock, **kw)


def kinds(driver: FakeDriver) -> list[type]:
    return [type(a) for a in driver.executed]


def test_absent_to_running(driver: FakeDriver, clock: FakeClock, _isolated_home: Path) -> None:
    seen: list[tuple[Phase, float]] = []
    s = until("vm", RUN, driver, clock, on_phase=lambda p, t: seen.append((p, t)))
    assert s.phase is Phase.RUNNING and s.is_true(READY)
    assert kinds(driver) == [CreateInstance, BuildCidata, StartHostAgent, WaitSSH,
                             WaitProvisioned, MarkRunning]
    assert [p for p, _ in seen] == [Phase.CREATED, Phase.CIDATA_BUILT, Phase.BOOTING,
                                    Phase.SSH_READY, Phase.PROVISIONED, Phase.RUNNING]
    assert dict(seen)[Phase.SSH_READY] == driver.ssh_delay
    saved = json.loads((_isolated_home / "vm" / "status.json").read_text())
    assert saved["phase"] == "running" and saved["iid"] == driver.vm("vm").booted_iid


def test_converged_is_done_without_actions(driver: FakeDriver, clock: FakeClock) -> None:
    until("vm", RUN, driver, clock)
    driver.executed.clear()
    p = reconcile_pass("vm", RUN, driver, StatusStore(), clock)
    assert p.decision == Done("running") and p.outcome is None
    assert until("vm", RUN, driver, clock).phase is Phase.RUNNING
    assert driver.executed == []


def test_stop_then_start_gets_a_new_iid(driver: FakeDriver, clock: FakeClock) -> None:
    first = until("vm", RUN, driver, clock).iid
    s = until("vm", STOP, driver, clock)
    assert s.phase is Phase.STOPPED and not driver.vm("vm").qemu_alive
    assert driver.executed[-1] == StopInstance(force=False)
    clock.advance(3)
    again = until("vm", RUN, driver, clock)
    assert again.phase is Phase.RUNNING and again.iid != first
    assert driver.vm("vm").boots == 2


def test_delete(driver: FakeDriver, clock: FakeClock, _isolated_home: Path) -> None:
    until("vm", RUN, driver, clock)
    s = until("vm", GONE, driver, clock)
    assert s.phase is Phase.ABSENT
    assert kinds(driver)[-2:] == [StopInstance, DeleteInstance]
    assert not (_isolated_home / "vm").exists()


def test_create_only(driver: FakeDriver, clock: FakeClock) -> None:
    s = until("vm", DesiredState(SPEC, "g1", RunState.STOPPED), driver, clock)
    assert s.phase is Phase.CREATED and kinds(driver) == [CreateInstance]


def test_ssh_flake_is_retried(driver: FakeDriver, clock: FakeClock) -> None:
    driver.ssh_flakes = 2
    s = until("vm", RUN, driver, clock)
    assert s.phase is Phase.RUNNING and s.retries == 0 and s.last_error is None
    assert kinds(driver).count(WaitSSH) == 3
    assert clock.slept  # the backoff was waited out on the fake clock


def test_permanent_failure_stalls(driver: FakeDriver, clock: FakeClock) -> None:
    driver.digest_mismatch = True
    s = until("vm", RUN, driver, clock)
    assert s.stalled and s.phase is Phase.FAILED
    assert s.last_error is not None and "digest mismatch" in s.last_error
    assert kinds(driver) == [CreateInstance]  # never retried
    # The controller (no rearm) leaves it alone; a user asking again retries once it is fixed.
    assert reconcile_pass("vm", RUN, driver, StatusStore(), clock, previous=s).outcome is None
    assert not (paths.instance_dir("vm")).exists()  # the failed create left nothing behind
    driver.digest_mismatch = False
    assert until("vm", RUN, driver, clock).phase is Phase.RUNNING


def test_qemu_dies_and_the_next_reconcile_recovers(driver: FakeDriver, clock: FakeClock) -> None:
    until("vm", RUN, driver, clock)
    driver.kill_qemu("vm")
    s = reconcile_once("vm", RUN, driver, StatusStore(), clock)
    assert s.phase is Phase.STOPPED and s.restarts == 1 and s.next_attempt is not None
    assert not s.is_true(READY)
    s = until("vm", RUN, driver, clock)
    assert s.phase is Phase.RUNNING and driver.vm("vm").boots == 2


def test_orphan_qemu_gets_a_new_agent_not_a_reboot(driver: FakeDriver, clock: FakeClock) -> None:
    until("vm", RUN, driver, clock)
    driver.vm("vm").agent_alive = False
    s = until("vm", RUN, driver, clock)
    assert s.phase is Phase.RUNNING
    assert not any(isinstance(a, Abort | StopInstance) for a in driver.executed)
    assert (driver.vm("vm").boots, driver.vm("vm").attaches) == (1, 1)


def test_orphan_qemu_is_powered_down_when_stop_is_wanted(
    driver: FakeDriver, clock: FakeClock
) -> None:
    until("vm", RUN, driver, clock)
    driver.vm("vm").agent_alive = False
    s = until("vm", STOP, driver, clock)
    assert s.phase is Phase.STOPPED
    assert StopInstance(force=False) in driver.executed


def test_crash_loop_backs_off_like_kubernetes(driver: FakeDriver, clock: FakeClock) -> None:
    driver.qemu_dies_after = 2.0  # dies before ssh comes up, every time
    with pytest.raises(WaitTimeout) as exc:
        until("vm", RUN, driver, clock, timeout=400)
    status = exc.value.status
    assert status.restarts >= 3
    waits = [s for s in clock.slept if s >= 8]  # the crash backoffs (10 s doubling, jittered)
    assert len(waits) >= 3 and waits[1] > waits[0] and waits[2] > waits[1]
    assert "did not reach running within 400 s" in str(exc.value)


def test_ssh_never_up_hits_the_phase_deadline(driver: FakeDriver, clock: FakeClock) -> None:
    driver.ssh_never = True
    with pytest.raises(WaitTimeout) as exc:
        until("vm", RUN, driver, clock, timeout=PHASE_DEADLINES[Phase.BOOTING] + 60)
    aborts = [a for a in driver.executed if isinstance(a, Abort)]
    assert len(aborts) == 1 and "ssh did not come up" in aborts[0].reason
    # The aborted boot is followed by a fresh one (new cidata, new qemu), counted once.
    after = [type(a).__name__ for a in driver.executed[driver.executed.index(aborts[0]) + 1:]]
    assert after[:2] == ["BuildCidata", "StartHostAgent"]
    assert driver.vm("vm").boots == 2 and exc.value.status.restarts == 1


def test_provision_failure_is_degraded_not_retried(driver: FakeDriver, clock: FakeClock) -> None:
    # As the real host agent reports it (tests/component/test_driver_scenarios.py checks
    # the two drivers agree): an error of the running boot, not a fact of its own.
    driver.provision_error = "provision.system/00 exited 1"
    s = until("vm", RUN, driver, clock)
    assert s.phase is Phase.RUNNING and s.is_true(DEGRADED) and not s.is_true(READY)
    cond = s.condition(DEGRADED)
    assert cond is not None and "provision.system/00 exited 1" in cond.message
    assert driver.vm("vm").boots == 1
    # Later passes keep it Degraded from what they observe, without a reboot.
    s = until("vm", RUN, driver, clock)
    assert s.is_true(DEGRADED) and driver.vm("vm").boots == 1


def test_crash_between_steps_rebuilds_from_facts(driver: FakeDriver, clock: FakeClock,
                                                 _isolated_home: Path) -> None:
    store = StatusStore()
    for _ in range(3):  # create, seed, boot
        reconcile_once("vm", RUN, driver, store, clock)
    assert driver.vm("vm").qemu_alive
    # limactl is killed: its status.json is lost, the VM keeps booting.
    (_isolated_home / "vm" / "status.json").unlink()
    clock.advance(driver.ssh_delay + driver.provision_delay)
    driver.executed.clear()
    s = reconcile_once("vm", RUN, driver, store, clock)
    assert kinds(driver) == [MarkRunning]  # markers proved provisioned; no second boot
    assert s.phase is Phase.RUNNING and driver.vm("vm").boots == 1


def test_corrupt_status_is_rebuilt(driver: FakeDriver, clock: FakeClock,
                                   _isolated_home: Path) -> None:
    until("vm", RUN, driver, clock)
    (_isolated_home / "vm" / "status.json").write_text("{garbage")
    driver.executed.clear()
    s = until("vm", RUN, driver, clock)
    assert s.phase is Phase.RUNNING and driver.vm("vm").boots == 1
    assert kinds(driver) == [MarkRunning]


def test_stale_running_status_with_dead_qemu(driver: FakeDriver, clock: FakeClock) -> None:
    until("vm", RUN, driver, clock)
    driver.kill_qemu("vm")
    s = until("vm", STOP, driver, clock)  # the truth is stopped: nothing to do
    assert s.phase is Phase.STOPPED
    assert not any(isinstance(a, StopInstance) for a in driver.executed)


def test_timeout_budget_caps_wait_steps(driver: FakeDriver, clock: FakeClock) -> None:
    driver.ssh_delay = 1000.0
    with pytest.raises(WaitTimeout) as exc:
        until("vm", RUN, driver, clock, timeout=20)
    waits = [a for a in driver.executed if isinstance(a, WaitSSH)]
    assert waits and all(w.budget <= 20 for w in waits)
    assert exc.value.status.phase is Phase.BOOTING


def test_converged_pass_does_not_rewrite_status(driver: FakeDriver, clock: FakeClock,
                                                _isolated_home: Path) -> None:
    until("vm", RUN, driver, clock)
    reconcile_once("vm", RUN, driver, StatusStore(), clock)  # settles fact-based conditions
    path = _isolated_home / "vm" / "status.json"
    before = path.stat().st_mtime_ns
    path.chmod(0o444)  # any write would replace the inode; check it stays
    inode = path.stat().st_ino
    clock.advance(5)
    assert reconcile_once("vm", RUN, driver, StatusStore(), clock).phase is Phase.RUNNING
    assert path.stat().st_ino == inode and path.stat().st_mtime_ns == before
