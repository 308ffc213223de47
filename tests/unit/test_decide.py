"""decide() and observe_phase(): table-driven, pure; plus backoff growth and cap."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lima.states.actions import (
    Abort,
    BuildCidata,
    CreateInstance,
    DeleteInstance,
    Done,
    MarkRunning,
    Stalled,
    StartHostAgent,
    StopInstance,
    Wait,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.decide import decide, new_iid, observe_phase
from lima.states.model import STALLED, CondStatus, DesiredState, ObservedState, RunState, Status
from lima.states.phases import Phase
from lima.states.policy import (
    CRASH_BACKOFF_CAP,
    PHASE_DEADLINES,
    STEP_BACKOFF_CAP,
    STEP_BUDGET,
    backoff,
    crash_backoff,
    step_backoff,
)

NOW = 10_000.0
IID = "iid-1"
SPEC: Any = object()  # decide() never looks inside the spec


def want(run: str, gen: str = "g1", spec: Any = SPEC) -> DesiredState:
    return DesiredState(spec, gen, RunState(run))


def obs(**kw: Any) -> ObservedState:
    return ObservedState(**kw)


NOTHING = obs()
CREATED = obs(dir_exists=True, has_lima_yaml=True, disks_ready=True)
SEEDED = replace(CREATED, cidata_iid=IID)
UP = replace(SEEDED, qemu_pid_alive=True, hostagent_pid_alive=True)
SSH = replace(UP, ssh_ready_iid=IID)
DONE = replace(SSH, boot_done_iid=IID)


def st(phase: Phase, since: float = NOW - 1, **kw: Any) -> Status:
    return Status(phase=phase, since=since, iid=kw.pop("iid", IID), **kw)


# (id, desired run state, observed, recorded status, expected decision)
CASES: list[tuple[str, str, ObservedState, Status, object]] = [
    ("fresh create", "running", NOTHING, Status(), CreateInstance()),
    ("dir without lima.yaml", "running", obs(dir_exists=True), Status(), CreateInstance()),
    ("created -> seed", "running", CREATED, st(Phase.CREATED), BuildCidata(new_iid(NOW, IID))),
    ("stopped -> new seed", "running", SEEDED, st(Phase.STOPPED), BuildCidata(new_iid(NOW, IID))),
    ("seeded -> boot", "running", SEEDED, st(Phase.CIDATA_BUILT), StartHostAgent(IID)),
    ("booting -> wait ssh", "running", UP, st(Phase.BOOTING), WaitSSH(IID, STEP_BUDGET)),
    ("ssh -> wait boot-done", "running", SSH, st(Phase.SSH_READY),
     WaitProvisioned(IID, STEP_BUDGET)),
    ("provisioned -> check", "running", DONE, st(Phase.PROVISIONED),
     MarkRunning(IID, STEP_BUDGET)),
    ("converged", "running", DONE, st(Phase.RUNNING), Done("running")),
    # Facts override the recorded phase.
    ("file says running, qemu dead", "running", SEEDED, st(Phase.RUNNING),
     BuildCidata(new_iid(NOW, IID))),
    ("file says booting, markers say done", "running", DONE, st(Phase.BOOTING),
     MarkRunning(IID, STEP_BUDGET)),
    ("file lost, VM fully up", "running", DONE, Status(), MarkRunning(IID, STEP_BUDGET)),
    ("file lost, VM booting", "running", UP, Status(), WaitSSH(IID, STEP_BUDGET)),
    ("file says absent, instance stopped", "running", SEEDED, Status(),
     BuildCidata(new_iid(NOW, None))),
    ("file says seeded, seed is stale", "running", replace(CREATED, cidata_iid="old"),
     st(Phase.CIDATA_BUILT), BuildCidata(new_iid(NOW, IID))),
    ("markers of an older boot", "running", replace(UP, ssh_ready_iid="old", boot_done_iid="old"),
     st(Phase.RUNNING), WaitSSH(IID, STEP_BUDGET)),
    ("markers not read, same boot", "running", replace(UP, markers_read=False),
     st(Phase.RUNNING), Done("running")),
    ("markers not read, other boot", "running", replace(UP, markers_read=False),
     st(Phase.RUNNING, iid="other"), WaitSSH(IID, STEP_BUDGET)),
    # Broken pairs.
    ("agent died, qemu runs", "running", replace(DONE, hostagent_pid_alive=False),
     st(Phase.RUNNING), StartHostAgent(IID, attach=True)),
    ("qemu died, agent lingers", "running", replace(SEEDED, hostagent_pid_alive=True),
     st(Phase.RUNNING), StopInstance(force=True)),
    ("broken while stopping wanted", "stopped", replace(DONE, hostagent_pid_alive=False),
     st(Phase.RUNNING), StopInstance(force=False)),
    # Failed attempts.
    ("failed with VM left", "running", UP, st(Phase.FAILED), StopInstance(force=False)),
    ("failed, backoff over", "running", SEEDED, st(Phase.FAILED, next_attempt=NOW - 1),
     BuildCidata(new_iid(NOW, IID))),
    ("failed create, backoff over", "running", obs(dir_exists=True),
     st(Phase.FAILED, next_attempt=NOW), CreateInstance()),
    # Stopping.
    ("stop a running VM", "stopped", DONE, st(Phase.RUNNING), StopInstance(force=False)),
    ("stop a booting VM", "stopped", UP, st(Phase.BOOTING), StopInstance(force=False)),
    ("stop overdue -> force", "stopped", UP,
     st(Phase.STOPPING, since=NOW - PHASE_DEADLINES[Phase.STOPPING] - 1), StopInstance(force=True)),
    ("already stopped", "stopped", SEEDED, st(Phase.STOPPED), Done("stopped")),
    ("create only", "stopped", NOTHING, Status(), CreateInstance()),
    ("stop of nothing", "stopped-nospec", NOTHING, Status(), Done("not created")),
    ("start during a stop: finish it", "running", UP, st(Phase.STOPPING),
     StopInstance(force=False)),
    # Deleting.
    ("delete running", "absent", DONE, st(Phase.RUNNING), StopInstance(force=True)),
    ("delete stopped", "absent", SEEDED, st(Phase.STOPPED), DeleteInstance()),
    ("delete a broken dir", "absent", obs(dir_exists=True), Status(), DeleteInstance()),
    ("delete done", "absent", NOTHING, Status(), Done("absent")),
    # Deadlines.
    ("ssh deadline", "running", UP,
     st(Phase.BOOTING, since=NOW - PHASE_DEADLINES[Phase.BOOTING] - 1),
     Abort(f"ssh did not come up within {PHASE_DEADLINES[Phase.BOOTING]:.0f} s")),
    ("provision deadline", "running", SSH,
     st(Phase.SSH_READY, since=NOW - PHASE_DEADLINES[Phase.SSH_READY] - 1),
     Abort(f"provisioning did not finish within {PHASE_DEADLINES[Phase.SSH_READY]:.0f} s")),
    ("ready deadline", "running", DONE,
     st(Phase.PROVISIONED, since=NOW - PHASE_DEADLINES[Phase.PROVISIONED] - 1),
     Abort(f"the instance was not ready within {PHASE_DEADLINES[Phase.PROVISIONED]:.0f} s")),
    ("budget shrinks near the deadline", "running", UP,
     st(Phase.BOOTING, since=NOW - PHASE_DEADLINES[Phase.BOOTING] + 5), WaitSSH(IID, 5.0)),
    ("phase rebuilt from facts: deadline restarts", "running", UP,
     st(Phase.CIDATA_BUILT, since=NOW - 10_000), WaitSSH(IID, STEP_BUDGET)),
    # Backoff gates progress but not clean-up.
    ("wait before next attempt", "running", UP,
     st(Phase.BOOTING, next_attempt=NOW + 7, last_error="ssh: refused"),
     Wait(NOW + 7, "ssh: refused")),
    ("crash-loop wait", "running", SEEDED,
     st(Phase.STOPPED, next_attempt=NOW + 40, last_error="qemu exited"),
     Wait(NOW + 40, "qemu exited")),
    ("backoff does not block a stop", "stopped", UP,
     st(Phase.BOOTING, next_attempt=NOW + 40), StopInstance(force=False)),
]


@pytest.mark.parametrize(
    ("run", "observed", "status", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_table(run: str, observed: ObservedState, status: Status, expected: object) -> None:
    desired = want("stopped", spec=None) if run == "stopped-nospec" else want(run)
    assert decide(desired, observed, status, NOW) == expected


def _stalled(gen: str | None) -> Status:
    s = st(Phase.FAILED, last_error="digest mismatch")
    return s.with_condition(STALLED, CondStatus.TRUE, "PermanentFailure", "digest mismatch",
                            NOW - 5, gen)


def test_permanent_failure_stalls_until_the_spec_changes() -> None:
    s = _stalled("g1")
    assert decide(want("running"), obs(dir_exists=True), s, NOW + 1e6) == Stalled(
        "digest mismatch"
    )
    assert decide(want("absent"), obs(dir_exists=True), s, NOW) == Stalled("digest mismatch")
    # A new generation is worth another try.
    assert decide(want("running", gen="g2"), obs(dir_exists=True), s, NOW) == CreateInstance()


def test_stalled_false_does_not_block() -> None:
    s = st(Phase.STOPPED).with_condition(STALLED, CondStatus.FALSE, "Progressing", "", NOW, "g1")
    assert decide(want("running"), SEEDED, s, NOW) == BuildCidata(new_iid(NOW, IID))


def test_running_needs_a_spec() -> None:
    with pytest.raises(ValueError, match="needs a spec"):
        decide(want("running", spec=None), SEEDED, st(Phase.STOPPED), NOW)


def test_decide_reads_no_clock_and_no_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """decide() is pure: with the clock and the file system gone it still decides, and
    the time it acts on is the `now` it is given."""
    import os
    import time

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("decide() touched the world")

    desired, status = want("running"), st(Phase.BOOTING)
    with monkeypatch.context() as m:
        for mod, attr in ((time, "time"), (time, "monotonic"), (os, "stat"), (os, "open")):
            m.setattr(mod, attr, forbidden)
        early = decide(desired, UP, status, NOW)
        late = decide(desired, UP, status, NOW + 1)
    assert isinstance(early, WaitSSH) and isinstance(late, WaitSSH)


@pytest.mark.parametrize(
    ("observed", "status", "phase"),
    [
        (NOTHING, st(Phase.RUNNING), Phase.ABSENT),
        (NOTHING, st(Phase.FAILED), Phase.FAILED),
        (replace(CREATED, disks_ready=False), st(Phase.STOPPED), Phase.ABSENT),
        (CREATED, Status(), Phase.CREATED),
        (SEEDED, Status(), Phase.STOPPED),
        (SEEDED, st(Phase.RUNNING), Phase.STOPPED),
        (SEEDED, st(Phase.STOPPING), Phase.STOPPED),
        (SEEDED, st(Phase.CIDATA_BUILT), Phase.CIDATA_BUILT),
        (UP, st(Phase.CIDATA_BUILT), Phase.BOOTING),
        (SSH, st(Phase.BOOTING), Phase.SSH_READY),
        (DONE, st(Phase.SSH_READY), Phase.PROVISIONED),
        (DONE, st(Phase.RUNNING), Phase.RUNNING),
        (DONE, st(Phase.RUNNING, iid="older"), Phase.PROVISIONED),
        (DONE, st(Phase.STOPPING), Phase.STOPPING),
        (UP, st(Phase.FAILED), Phase.FAILED),
    ],
)
def test_observe_phase(observed: ObservedState, status: Status, phase: Phase) -> None:
    assert observe_phase(observed, status) is phase


def test_new_iid_is_fresh() -> None:
    assert new_iid(12.5, None) == "iid-12500"
    assert new_iid(12.5, "iid-12500") == "iid-12501"


def test_backoff_grows_then_caps() -> None:
    steps = [step_backoff(n, "x") for n in range(1, 12)]
    assert all(b <= STEP_BACKOFF_CAP for b in steps)
    assert steps[0] < steps[1] < steps[2] < steps[3]
    assert steps[-1] == STEP_BACKOFF_CAP
    crashes = [crash_backoff(n, "x") for n in range(1, 12)]
    assert 8.0 <= crashes[0] <= 12.0  # 10 s +-20 %
    assert crashes[-1] == CRASH_BACKOFF_CAP


def test_backoff_jitter_is_bounded_and_deterministic() -> None:
    values = {backoff(3, base=1.0, cap=100.0, seed=f"s{i}") for i in range(50)}
    assert all(3.2 <= v <= 4.8 for v in values)  # 4 s +-20 %
    assert len(values) > 10  # jitter spreads
    assert backoff(3, base=1.0, cap=100.0, seed="a") == backoff(3, base=1.0, cap=100.0, seed="a")
