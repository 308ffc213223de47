"""resync() and apply_outcome(): how facts and step outcomes move the recorded Status."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lima.states.actions import (
    Abort,
    BuildCidata,
    CreateInstance,
    MarkRunning,
    Outcome,
    StopInstance,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.advance import apply_outcome, rearm, resync
from lima.states.machine import IllegalTransition
from lima.states.model import (
    DEGRADED,
    READY,
    RESTART_REQUIRED,
    STALLED,
    DesiredState,
    ObservedState,
    RunState,
    Status,
)
from lima.states.phases import Phase
from lima.states.policy import MAX_STEP_RETRIES, STABLE_AFTER, crash_backoff, step_backoff

NOW = 50_000.0
IID = "iid-1"
SPEC: Any = object()
WANT = DesiredState(SPEC, "g1", RunState.RUNNING)
SEEDED = ObservedState(
    dir_exists=True, has_lima_yaml=True, disks_ready=True, cidata_iid=IID
)
UP = replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True)
DONE = replace(UP, ssh_ready_iid=IID, boot_done_iid=IID)


def st(phase: Phase, **kw: Any) -> Status:
    return Status(phase=phase, since=kw.pop("since", NOW - 10), iid=IID, generation="g1", **kw)


def test_crash_is_a_restart_with_backoff() -> None:
    s = resync(st(Phase.RUNNING, restarts=2), SEEDED, WANT, NOW)
    assert s.phase is Phase.STOPPED and s.since == NOW
    assert s.restarts == 3
    assert s.next_attempt == NOW + crash_backoff(3, IID)
    assert s.last_error is not None and "unexpectedly" in s.last_error
    assert not s.is_true(READY)


def test_stable_run_forgets_restarts() -> None:
    s = resync(st(Phase.RUNNING, restarts=4, since=NOW - STABLE_AFTER), DONE, WANT, NOW)
    assert s.phase is Phase.RUNNING and s.restarts == 0
    crashed = resync(st(Phase.RUNNING, restarts=4, since=NOW - STABLE_AFTER), SEEDED, WANT, NOW)
    assert crashed.restarts == 1


def test_halted_stop_is_not_a_crash() -> None:
    s = resync(st(Phase.STOPPING), SEEDED, WANT, NOW)
    assert s.phase is Phase.STOPPED and s.restarts == 0 and s.next_attempt is None


def test_facts_advance_the_phase_along_edges() -> None:
    assert resync(st(Phase.BOOTING), DONE, WANT, NOW).phase is Phase.PROVISIONED
    assert resync(Status(), DONE, WANT, NOW).phase is Phase.PROVISIONED  # status.json lost


def test_resync_conditions() -> None:
    s = resync(st(Phase.RUNNING), DONE, WANT, NOW)
    assert s.is_true(READY) and not s.is_true(DEGRADED) and not s.stalled
    assert s.observed_generation == "g1"
    changed = resync(st(Phase.RUNNING), DONE, replace(WANT, generation="g2"), NOW)
    assert changed.is_true(RESTART_REQUIRED)
    # A failed provisioning script reaches us as the host agent reports it once running.
    why = "provisioning failed: provision.system/00 exit 1"
    failed = resync(st(Phase.RUNNING), replace(DONE, agent_errors=(why,)), WANT, NOW)
    assert failed.is_true(DEGRADED) and not failed.is_true(READY)
    cond = failed.condition(DEGRADED)
    assert cond is not None and cond.message == why


def test_success_moves_and_clears_retries() -> None:
    s = st(Phase.BOOTING, retries=3, next_attempt=NOW - 1, last_error="refused")
    out = apply_outcome(s, WaitSSH(IID, 30), Outcome.success(), WANT, NOW)
    assert out.phase is Phase.SSH_READY and out.retries == 0
    assert out.next_attempt is None and out.last_error is None


def test_build_cidata_records_iid_and_generation() -> None:
    out = apply_outcome(st(Phase.STOPPED), BuildCidata("iid-9"), Outcome.success(),
                        replace(WANT, generation="g7"), NOW)
    assert out.phase is Phase.CIDATA_BUILT and out.iid == "iid-9" and out.generation == "g7"


def test_temporary_failure_backs_off() -> None:
    s = st(Phase.BOOTING, retries=1)
    out = apply_outcome(s, WaitSSH(IID, 30), Outcome.temporary("refused"), WANT, NOW)
    assert out.phase is Phase.BOOTING and out.retries == 2
    assert out.next_attempt == NOW + step_backoff(2, IID)
    assert out.last_error == "refused"
    now_retry = apply_outcome(s, WaitSSH(IID, 30), Outcome.temporary("x", retry_after=0.0),
                              WANT, NOW)
    assert now_retry.next_attempt == NOW


def test_too_many_temporary_failures_fail_the_attempt() -> None:
    s = st(Phase.CREATED, retries=MAX_STEP_RETRIES)
    out = apply_outcome(s, BuildCidata("i"), Outcome.temporary("disk full"), WANT, NOW)
    assert out.phase is Phase.FAILED and out.restarts == 1 and out.retries == 0
    assert out.next_attempt == NOW + crash_backoff(1, IID)


def test_permanent_failure_stalls() -> None:
    out = apply_outcome(Status(), CreateInstance(), Outcome.failure("digest mismatch"), WANT, NOW)
    assert out.phase is Phase.FAILED and out.stalled
    cond = out.condition(STALLED)
    assert cond is not None and cond.message == "digest mismatch"
    assert cond.observed_generation == "g1"
    assert out.next_attempt is None
    again = rearm(out, NOW + 1, "g1")
    assert not again.stalled


def test_abort_counts_a_restart() -> None:
    out = apply_outcome(st(Phase.BOOTING, restarts=1), Abort("ssh timeout"), Outcome.success(),
                        WANT, NOW)
    assert out.phase is Phase.FAILED and out.restarts == 2
    assert out.last_error == "ssh timeout"
    assert out.next_attempt == NOW + crash_backoff(2, IID)


def test_cleanup_in_failed_keeps_backoff() -> None:
    s = st(Phase.FAILED, restarts=2, next_attempt=NOW + 30, last_error="boom")
    out = apply_outcome(s, StopInstance(force=True), Outcome.success(), WANT, NOW)
    assert out.phase is Phase.FAILED
    assert out.next_attempt == NOW + 30 and out.last_error == "boom" and out.restarts == 2


def test_stop_from_running_fires_stop_and_halted() -> None:
    out = apply_outcome(st(Phase.RUNNING, restarts=3), StopInstance(False), Outcome.success(),
                        WANT, NOW)
    assert out.phase is Phase.STOPPED and out.restarts == 0


def test_provision_errors_degrade() -> None:
    out = apply_outcome(st(Phase.SSH_READY), WaitProvisioned(IID, 30),
                        Outcome.success(errors=["provision.user/00 exit 2"]), WANT, NOW)
    assert out.phase is Phase.PROVISIONED and out.is_true(DEGRADED)
    ran = apply_outcome(out, MarkRunning(IID, 30), Outcome.success(), WANT, NOW)
    assert ran.phase is Phase.RUNNING and ran.is_true(DEGRADED) and not ran.is_true(READY)


def test_mount_errors_degrade_with_reason_mount_failed() -> None:
    why = "mount /srv on /sys/x (9p) failed: mkdir: cannot create directory '/sys/x'"
    out = apply_outcome(st(Phase.SSH_READY), WaitProvisioned(IID, 30),
                        Outcome.success(errors=[why]), WANT, NOW)
    cond = out.condition(DEGRADED)
    assert cond is not None and (cond.reason, cond.message) == ("MountFailed", why)
    again = resync(st(Phase.RUNNING), replace(DONE, agent_errors=(why,)), WANT, NOW)
    cond = again.condition(DEGRADED)
    assert cond is not None and cond.reason == "MountFailed" and not again.is_true(READY)
    mixed = apply_outcome(st(Phase.SSH_READY), WaitProvisioned(IID, 30),
                          Outcome.success(errors=[why, "provisioning failed: x"]), WANT, NOW)
    cond = mixed.condition(DEGRADED)
    assert cond is not None and cond.reason == "ProvisionFailed"


def test_inconsistent_action_is_a_bug() -> None:
    with pytest.raises(IllegalTransition):
        apply_outcome(st(Phase.CREATED), WaitSSH(IID, 30), Outcome.success(), WANT, NOW)


def test_wait_steps_are_bounded_by_the_phase_deadline_not_the_retry_count() -> None:
    s = st(Phase.BOOTING, retries=MAX_STEP_RETRIES + 5)
    out = apply_outcome(s, WaitSSH(IID, 30), Outcome.temporary("not yet", retry_after=0.0),
                        WANT, NOW)
    assert out.phase is Phase.BOOTING and out.retries == MAX_STEP_RETRIES + 6


def test_unresponsive_guest_is_not_ready_until_it_answers_again() -> None:
    hung = replace(DONE, guest_responsive=False,
                   agent_errors=("the guest does not answer: no answer over ssh since 10:00",))
    s = resync(st(Phase.RUNNING), hung, WANT, NOW)
    assert s.phase is Phase.RUNNING  # not killed, not rebooted: still the same boot
    cond = s.condition(DEGRADED)
    assert cond is not None and cond.reason == "GuestUnresponsive"
    assert "does not answer" in cond.message
    assert not s.is_true(READY)
    back = resync(s, DONE, WANT, NOW + 5)
    assert not back.is_true(DEGRADED) and back.is_true(READY)


def test_reattached_agent_keeps_the_phase() -> None:
    from lima.states.actions import StartHostAgent

    s = apply_outcome(st(Phase.RUNNING), StartHostAgent(IID, attach=True), Outcome.success(),
                      WANT, NOW)
    assert s.phase is Phase.RUNNING and s.restarts == 0
