"""Advance the recorded Status: sync it with the facts, then apply one step's Outcome.

`lima.controller.reconcile` calls `resync()` right after `observe()` (so the phase written
to status.json is the one the facts prove) and `apply_outcome()` after `execute()`. Both
move the phase only through `Lifecycle` (the transitions table); both are pure: the time
is an argument and nothing here touches disk, processes or sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lima.states.actions import (
    Abort,
    Action,
    BuildCidata,
    CreateInstance,
    DeleteInstance,
    DiscardSavedState,
    MarkRunning,
    Outcome,
    ResumeInstance,
    StartHostAgent,
    StopInstance,
    SuspendInstance,
    WaitProvisioned,
    WaitResumed,
    WaitSSH,
)
from lima.states.decide import observe_phase
from lima.states.machine import Lifecycle
from lima.states.model import (
    DEGRADED,
    READY,
    RESTART_REQUIRED,
    STALLED,
    CondStatus,
    DesiredState,
    ObservedState,
    Status,
)
from lima.states.phases import LIVE_PHASES, Phase, legal, triggers_between
from lima.states.policy import (
    MAX_STEP_RETRIES,
    PHASE_DEADLINES,
    STABLE_AFTER,
    crash_backoff,
    step_backoff,
)

T, F = CondStatus.TRUE, CondStatus.FALSE
# Degraded's reason while the host agent's heartbeat gets no answer from the guest.
GUEST_UNRESPONSIVE = "GuestUnresponsive"
UNRESPONSIVE_HINT = "does not answer"


def rearm(status: Status, now: float, generation: str | None = None) -> Status:
    """A user asked again, or the spec changed: forget Stalled and any backoff, the
    crash-loop count with it (the facts are re-read anyway)."""
    s = replace(status, retries=0, restarts=0, next_attempt=None)
    if s.stalled:
        s = s.with_condition(STALLED, F, "Rearmed", "asked again", now, generation)
    return s


def stall(status: Status, reason: str, now: float, generation: str | None) -> Status:
    """Stalled=True with `reason`, the phase as it is: nothing is tried again until the spec
    changes or a user asks again (`rearm`). For a loop that gets nowhere (the reconciler
    notices it), where no single step failed for good."""
    s = replace(status, next_attempt=None, last_error=reason)
    return _ready(s.with_condition(STALLED, T, "NoProgress", reason, now, generation), now)


def resync(status: Status, observed: ObservedState, desired: DesiredState, now: float) -> Status:
    """Move the recorded phase to the one the facts prove, and refresh fact-based conditions.

    A live phase whose qemu is gone becomes `stopped` through `crashed` and counts a restart
    (crash-loop backoff); a stop that completed fires `halted`; any other difference fires
    the table's edge when there is one, else the phase is adopted (the file was stale).
    """
    s = status
    fact = observe_phase(observed, s)
    if fact in LIVE_PHASES and observed.cidata_iid and observed.cidata_iid != s.iid:
        s = replace(s, iid=observed.cidata_iid)  # the boot that actually runs
    if s.phase is Phase.RUNNING and s.restarts and now - s.since >= STABLE_AFTER:
        s = replace(s, restarts=0)  # stable long enough: earlier crashes are forgiven
    if fact is not s.phase:
        lc = Lifecycle(s.phase, s.since)
        if s.phase in LIVE_PHASES and s.phase is not Phase.STOPPING and fact is Phase.STOPPED:
            lc.fire("crashed", now)
            restarts = s.restarts + 1
            s = replace(
                s,
                phase=lc.phase,
                since=lc.since,
                restarts=restarts,
                retries=0,
                next_attempt=now + crash_backoff(restarts, s.iid or ""),
                last_error=f"qemu exited unexpectedly (was {s.phase.value})",
            )
        else:
            edges = [t for t in triggers_between(s.phase, fact) if t != "crashed"]
            if edges:
                lc.fire(edges[0], now)
            else:
                lc.adopt(fact, now)
            s = replace(s, phase=lc.phase, since=lc.since)
    if s.stalled:
        cond = s.condition(STALLED)
        if cond is not None and cond.observed_generation not in (None, desired.generation):
            s = rearm(s, now, desired.generation)  # the spec changed: worth another try
    s = replace(s, observed_generation=desired.generation)
    return _fact_conditions(s, observed, desired, now)


def apply_outcome(
    status: Status, action: Action, outcome: Outcome, desired: DesiredState, now: float
) -> Status:
    """The Status after `action` ended with `outcome` (at time `now`)."""
    s = status
    gen = desired.generation
    if not outcome.ok:
        error = outcome.error or f"{type(action).__name__} failed"
        if isinstance(action, SuspendInstance) and (outcome.permanent
                                                    or s.retries + 1 > MAX_STEP_RETRIES):
            # The guest goes on running: a suspend that cannot be done stalls with the
            # reason, it never fails (or powers down) the boot.
            s = replace(s, retries=0, next_attempt=None, last_error=error)
            return _ready(s.with_condition(STALLED, T, "SuspendFailed", error, now, gen), now)
        if outcome.permanent:
            s = _fire(s, ["fail"], now)
            s = replace(s, retries=0, next_attempt=None, last_error=error)
            return _ready(s.with_condition(STALLED, T, "PermanentFailure", error, now, gen), now)
        retries = s.retries + 1
        # Phases with a deadline are bounded by it (a wait step's "not yet" is no failure);
        # the others give up the attempt after MAX_STEP_RETRIES.
        if retries > MAX_STEP_RETRIES and s.phase not in PHASE_DEADLINES:
            return _ready(_failed_attempt(s, f"{error} (after {s.retries} retries)", now), now)
        delay = outcome.retry_after if outcome.retry_after is not None else step_backoff(
            retries, s.iid or ""
        )
        return replace(s, retries=retries, next_attempt=now + delay, last_error=error)

    if isinstance(action, Abort):
        s = _failed_attempt(s, action.reason, now)
        return _ready(s, now)
    triggers = _success_triggers(action, s.phase)
    s = _fire(s, triggers, now)
    if not triggers:
        return _ready(s, now)  # a clean-up: keep the failure record and its backoff
    s = replace(s, retries=0, next_attempt=None, last_error=None)
    if isinstance(action, StopInstance | DeleteInstance):
        s = replace(s, restarts=0)  # the user brought it down: the crash loop is over
    if isinstance(action, CreateInstance):
        s = replace(s, generation=gen)
    if isinstance(action, BuildCidata):
        s = replace(s, iid=action.iid, generation=gen)
    errors = _errors(outcome)
    if isinstance(action, WaitProvisioned | MarkRunning):
        if errors:
            s = s.with_condition(DEGRADED, T, _degraded_reason(action, errors), "; ".join(errors),
                                 now, gen)
        elif isinstance(action, WaitProvisioned):
            s = s.with_condition(DEGRADED, F, "Provisioned", "", now, gen)
    if s.stalled:
        s = s.with_condition(STALLED, F, "Progressing", "", now, gen)
    return _ready(s, now)


def _success_triggers(action: Action, phase: Phase) -> list[str]:
    """Which table edges a successful action fires from `phase`."""
    match action:
        case CreateInstance():
            return ["create"]
        case BuildCidata():
            return ["build_cidata"]
        case StartHostAgent(attach=True):
            return []  # the guest kept running: its phase does not change
        case StartHostAgent():
            return ["boot"]
        case WaitSSH():
            return ["ssh_up"]
        case WaitProvisioned():
            return ["provisioned"]
        case MarkRunning():
            return ["ready"]
        case StopInstance():
            if phase is Phase.STOPPING:
                return ["halted"]
            return ["stop", "halted"] if legal("stop", phase) else []
        case SuspendInstance():
            if phase is Phase.SUSPENDING:
                return ["saved"]
            return ["suspend", "saved"] if legal("suspend", phase) else []
        case ResumeInstance():
            return ["resume"]
        case WaitResumed():
            return ["resumed"]
        case DiscardSavedState():
            return ["discard"] if phase is Phase.SUSPENDED else []
        case DeleteInstance():
            return [] if phase is Phase.ABSENT else ["delete"]
        case Abort():
            return ["fail"]
    raise AssertionError(f"unknown action {action!r}")  # pragma: no cover


def _fire(s: Status, triggers: Sequence[str], now: float) -> Status:
    if not triggers:
        return s
    lc = Lifecycle(s.phase, s.since)
    for t in triggers:
        lc.fire(t, now)  # IllegalTransition here means decide() and the table disagree
    return replace(s, phase=lc.phase, since=lc.since)


def _failed_attempt(s: Status, reason: str, now: float) -> Status:
    """This attempt is over: fail, count a restart, back off like a crash loop."""
    s = _fire(s, ["fail"], now)
    restarts = s.restarts + 1
    return replace(
        s,
        retries=0,
        restarts=restarts,
        next_attempt=now + crash_backoff(restarts, s.iid or ""),
        last_error=reason,
    )


def _errors(outcome: Outcome) -> list[str]:
    raw = outcome.data.get("errors") or []
    return [str(e) for e in raw] if isinstance(raw, list | tuple) else [str(raw)]


def _degraded_reason(action: Action, errors: list[str]) -> str:
    return _errors_reason(
        errors, "ProvisionFailed" if isinstance(action, WaitProvisioned) else "NotReady")


def _errors_reason(errors: list[str], default: str) -> str:
    """MountFailed (every error a failed mount), ProvisionFailed (a provision step or
    cloud-init failed: the guest's boot-failed marker), ProbeFailed (a readiness probe
    never passed), else `default`. The words are the host agent's (lima.drivers.mounts,
    lima.drivers.ssh, lima.drivers.postboot)."""
    # The host agent words each failed mount "mount LOCATION on MOUNTPOINT ... failed: ...".
    if errors and all(e.startswith("mount ") for e in errors):
        return "MountFailed"
    if any(e.startswith("provisioning failed") for e in errors):
        return "ProvisionFailed"
    if any(e.startswith("probe ") for e in errors):
        return "ProbeFailed"
    return default


def _fact_conditions(
    s: Status, observed: ObservedState, desired: DesiredState, now: float
) -> Status:
    gen = desired.generation
    if observed.vm_alive and desired.spec is not None and s.generation not in (None, gen):
        s = s.with_condition(
            RESTART_REQUIRED, T, "SpecChanged",
            "lima.yaml changed since this boot; a restart applies it", now, gen,
        )
    else:
        s = s.with_condition(RESTART_REQUIRED, F, "UpToDate", "", now, gen)
    if not observed.vm_alive:
        s = s.with_condition(DEGRADED, F, "NotRunning", "", now, gen)
    elif not observed.guest_responsive and s.phase is Phase.RUNNING:
        why = "; ".join(e for e in observed.agent_errors if UNRESPONSIVE_HINT in e)
        s = s.with_condition(
            DEGRADED, T, GUEST_UNRESPONSIVE, why or "the guest does not answer over ssh",
            now, gen,
        )
    elif observed.agent_errors and s.phase is Phase.RUNNING:
        s = s.with_condition(
            DEGRADED, T, _errors_reason(list(observed.agent_errors), "HostAgentErrors"),
            "; ".join(observed.agent_errors), now, gen,
        )
    elif s.phase is Phase.RUNNING and _reason_is(s, DEGRADED, GUEST_UNRESPONSIVE):
        s = s.with_condition(DEGRADED, F, "Responsive", "the guest answers again", now, gen)
    if s.condition(STALLED) is None:
        s = s.with_condition(STALLED, F, "Progressing", "", now, gen)
    return _ready(s, now)


def _reason_is(s: Status, cond_type: str, reason: str) -> bool:
    cond = s.condition(cond_type)
    return cond is not None and cond.status is T and cond.reason == reason


def _ready(s: Status, now: float) -> Status:
    """Ready follows the phase: True only when running and not Degraded."""
    gen = s.observed_generation
    if s.phase is Phase.RUNNING and not s.is_true(DEGRADED):
        return s.with_condition(READY, T, "Running", "", now, gen)
    if s.phase is Phase.RUNNING:
        deg = s.condition(DEGRADED)
        return s.with_condition(READY, F, "Degraded", deg.message if deg else "", now, gen)
    reason = "".join(part.capitalize() for part in s.phase.value.split("_"))
    return s.with_condition(READY, F, reason, s.last_error or "", now, gen)
