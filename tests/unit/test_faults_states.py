"""The pure core under faults: a stop of a VM whose files went missing, and the Stalled
condition the reconciler sets when a loop gets nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from lima.states.actions import Done, Stalled, StopInstance
from lima.states.advance import rearm, stall
from lima.states.decide import decide
from lima.states.model import (
    READY,
    STALLED,
    CondStatus,
    DesiredState,
    ObservedState,
    RunState,
    Status,
)
from lima.states.phases import Phase

NOW = 10_000.0
SPEC: Any = object()
STOP = DesiredState(None, "g1", RunState.STOPPED)
RUN = DesiredState(SPEC, "g1", RunState.RUNNING)


@pytest.mark.parametrize(
    "missing",
    [{"disks_ready": False}, {"has_lima_yaml": False}, {"disks_ready": False,
                                                        "has_lima_yaml": False}],
)
def test_stop_brings_down_a_vm_whose_files_went_missing(missing: dict[str, bool]) -> None:
    facts = {"dir_exists": True, "has_lima_yaml": True, "disks_ready": True,
             "hostagent_pid_alive": True, "qemu_pid_alive": True, "markers_read": False}
    observed = ObservedState(**{**facts, **missing})  # type: ignore[arg-type]
    for recorded in (Phase.RUNNING, Phase.FAILED, Phase.ABSENT):
        decision = decide(STOP, observed, Status(phase=recorded, since=NOW - 1), NOW)
        assert decision == StopInstance(force=False), recorded


def test_stop_of_a_vm_that_is_gone_with_its_files_is_done() -> None:
    observed = ObservedState(dir_exists=True, has_lima_yaml=True, disks_ready=False)
    assert decide(STOP, observed, Status(phase=Phase.FAILED), NOW) == Done("not created")


def test_stall_keeps_the_phase_and_holds_until_a_user_asks() -> None:
    s = Status(phase=Phase.CREATED, since=NOW - 5, retries=0, next_attempt=NOW + 3)
    stalled = stall(s, "no progress: CreateInstance ran 5 times", NOW, "g1")
    assert stalled.phase is Phase.CREATED and stalled.since == NOW - 5
    assert stalled.stalled and stalled.next_attempt is None
    cond = stalled.condition(STALLED)
    assert cond is not None and cond.reason == "NoProgress"
    assert cond.message == "no progress: CreateInstance ran 5 times"
    ready = stalled.condition(READY)
    assert ready is not None and ready.status is CondStatus.FALSE
    observed = ObservedState(dir_exists=True, has_lima_yaml=True, disks_ready=False)
    assert decide(RUN, observed, stalled, NOW + 60) == Stalled(
        "no progress: CreateInstance ran 5 times")
    # A user asking again (every verb rearms) tries once more.
    assert not rearm(stalled, NOW + 60, "g1").stalled
