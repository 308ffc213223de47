"""decide() and the status advance for suspend and resume (issue 11): pure, no clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lima.states.actions import (
    Abort,
    BuildCidata,
    DiscardSavedState,
    Done,
    MarkRunning,
    Outcome,
    ResumeInstance,
    StartHostAgent,
    StopInstance,
    SuspendInstance,
    WaitResumed,
)
from lima.states.advance import apply_outcome, resync
from lima.states.decide import decide, new_iid, observe_phase
from lima.states.model import DesiredState, ObservedState, RunState, Status
from lima.states.phases import Phase
from lima.states.policy import PHASE_DEADLINES, STEP_BUDGET

NOW = 10_000.0
IID = "iid-1"
GEN = "g1"
SPEC: Any = object()

SEEDED = ObservedState(dir_exists=True, has_lima_yaml=True, disks_ready=True, cidata_iid=IID)
RUNNING = replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True,
                  ssh_ready_iid=IID, boot_done_iid=IID)
SAVED = replace(SEEDED, saved_generation=GEN)


def want(run: str, gen: str = GEN, spec: Any = SPEC, force: bool = False) -> DesiredState:
    return DesiredState(spec, gen, RunState(run), force=force)


def st(phase: Phase, since: float = NOW - 1) -> Status:
    return Status(phase=phase, since=since, iid=IID, generation=GEN)


CASES: list[tuple[str, DesiredState, ObservedState, Status, object]] = [
    ("running -> suspend", want("suspended"), RUNNING, st(Phase.RUNNING), SuspendInstance()),
    ("booting -> suspend too", want("suspended"),
     replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True), st(Phase.BOOTING),
     SuspendInstance()),
    ("saved -> done", want("suspended"), SAVED, st(Phase.SUSPENDED), Done("suspended")),
    ("stopped: nothing to save", want("suspended"), SEEDED, st(Phase.STOPPED), Done("stopped")),
    ("suspended -> resume", want("running"), SAVED, st(Phase.SUSPENDED), ResumeInstance(IID)),
    ("spec changed -> discard", want("running", gen="g2"), SAVED, st(Phase.SUSPENDED),
     DiscardSavedState("lima.yaml changed since the instance was suspended")),
    ("qemu changed -> discard", want("running"),
     replace(SAVED, saved_stale="the qemu binary changed"), st(Phase.SUSPENDED),
     DiscardSavedState("the qemu binary changed")),
    ("resuming -> wait", want("running"),
     replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True, resuming=True),
     st(Phase.RESUMING), WaitResumed(IID, STEP_BUDGET)),
    ("resumed -> mark running", want("running"), RUNNING, st(Phase.PROVISIONED),
     MarkRunning(IID, STEP_BUDGET)),
    ("interrupted suspend finished before resume", want("running"),
     replace(SAVED, qemu_pid_alive=True, hostagent_pid_alive=True), st(Phase.RUNNING),
     SuspendInstance()),
    ("saved state and a lone qemu: kill it", want("running"),
     replace(SAVED, qemu_pid_alive=True), st(Phase.SUSPENDING), StopInstance(force=True)),
    ("paused qemu without agent or state: attach", want("suspended"),
     replace(SEEDED, qemu_pid_alive=True), st(Phase.SUSPENDING), StartHostAgent(IID, attach=True)),
    ("stop wakes it for a clean shutdown", want("stopped", spec=None), SAVED,
     st(Phase.SUSPENDED), ResumeInstance(IID)),
    ("stop -f drops it", want("stopped", spec=None, force=True), SAVED, st(Phase.SUSPENDED),
     DiscardSavedState("stop -f: the saved state is dropped")),
    ("discarded -> cold boot", want("running"), SEEDED, st(Phase.STOPPED),
     BuildCidata(new_iid(NOW, IID))),
]


@pytest.mark.unit
@pytest.mark.parametrize(("desired", "observed", "status", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_suspend(desired: DesiredState, observed: ObservedState, status: Status,
                        expected: object) -> None:
    assert decide(desired, observed, status, NOW) == expected


@pytest.mark.unit
def test_resume_past_its_deadline_is_aborted() -> None:
    late = st(Phase.RESUMING, since=NOW - PHASE_DEADLINES[Phase.RESUMING] - 1)
    obs = replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True, resuming=True)
    assert isinstance(decide(want("running"), obs, late, NOW), Abort)


@pytest.mark.unit
def test_facts_prove_the_new_phases() -> None:
    alive = replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True)
    assert observe_phase(SAVED, st(Phase.RUNNING)) is Phase.SUSPENDED
    assert observe_phase(replace(alive, suspending=True), st(Phase.RUNNING)) is Phase.SUSPENDING
    assert observe_phase(replace(alive, saved_generation=GEN), st(Phase.RUNNING)) \
        is Phase.SUSPENDING  # saved, qemu has yet to quit
    assert observe_phase(replace(alive, resuming=True, saved_generation=GEN),
                         st(Phase.SUSPENDED)) is Phase.RESUMING
    # A resumed guest's markers (same instance-id) prove provisioned: no new boot needed.
    assert observe_phase(replace(alive, ssh_ready_iid=IID, boot_done_iid=IID),
                         st(Phase.RESUMING)) is Phase.PROVISIONED


@pytest.mark.unit
def test_status_walks_suspend_and_resume() -> None:
    d = want("suspended")
    s = apply_outcome(st(Phase.RUNNING), SuspendInstance(), Outcome.success(), d, NOW)
    assert s.phase is Phase.SUSPENDED
    s = resync(s, SAVED, want("running"), NOW + 1)
    assert s.phase is Phase.SUSPENDED
    s = apply_outcome(s, ResumeInstance(IID), Outcome.success(), want("running"), NOW + 2)
    assert s.phase is Phase.RESUMING
    s = apply_outcome(s, WaitResumed(IID, 30), Outcome.success(), want("running"), NOW + 3)
    assert s.phase is Phase.PROVISIONED
    s = apply_outcome(s, MarkRunning(IID, 30), Outcome.success(errors=[]), want("running"),
                      NOW + 4)
    assert s.phase is Phase.RUNNING and s.iid == IID  # the same boot: no new instance-id


@pytest.mark.unit
def test_qemu_killed_while_suspending_is_a_crash_to_stopped() -> None:
    s = resync(st(Phase.SUSPENDING), SEEDED, want("suspended"), NOW)
    assert s.phase is Phase.STOPPED and s.restarts == 1
    s = apply_outcome(st(Phase.SUSPENDED), DiscardSavedState("x"), Outcome.success(),
                      want("running"), NOW)
    assert s.phase is Phase.STOPPED


@pytest.mark.unit
def test_a_suspend_qemu_refuses_stalls_and_leaves_the_guest_running() -> None:
    from lima.states.actions import Stalled
    from lima.states.advance import rearm

    refused = Outcome.failure("suspend failed: QMP migrate: GenericError: Migration is "
                              "disabled when VirtFS export path '/x' is mounted")
    s = apply_outcome(st(Phase.RUNNING), SuspendInstance(), refused, want("suspended"), NOW)
    assert s.phase is Phase.RUNNING and s.stalled  # never failed, never powered down
    assert isinstance(decide(want("suspended"), RUNNING, s, NOW + 1), Stalled)
    # Retried temporary failures end the same way, not in `failed`.
    t = st(Phase.RUNNING)
    for i in range(12):
        t = apply_outcome(t, SuspendInstance(), Outcome.temporary("no QMP"),
                          want("suspended"), NOW + i)
    assert t.phase is Phase.RUNNING and t.stalled
    # `limactl start` asks again: the running guest is simply kept.
    again = rearm(s, NOW + 2, GEN)
    assert decide(want("running"), RUNNING, again, NOW + 2) == Done("running")
