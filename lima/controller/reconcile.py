"""The reconcile loop: load status, observe, decide, execute, advance, save.

Every verb (create, start, stop, delete, apply) and the folder controller drive instances
through these two functions; they differ only in the DesiredState they pass. Callers hold
`lima.controller.lock.instance_lock(name)` around them. `reconcile_once()` is one pass
(the controller's unit of work); `reconcile_until()` repeats passes until the instance
converges, stalls, or the overall timeout passes, reporting each new phase.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lima.controller.clock import Clock
from lima.controller.driver import Driver
from lima.controller.status_store import StatusStore
from lima.errors import LimaError, NotFoundError, PermanentError, SpecError, TemporaryError
from lima.states.actions import (
    Action,
    Decision,
    Done,
    MarkRunning,
    Outcome,
    Stalled,
    Wait,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.advance import apply_outcome, rearm, resync
from lima.states.decide import decide
from lima.states.model import DesiredState, Status
from lima.states.phases import Phase

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # `--timeout` default: 10 min for the whole wait
MAX_PASSES = 10_000  # a loop that makes no progress is a bug; fail loudly instead of spinning

PhaseCallback = Callable[[Phase, float], None]
# Asked before each pass and during waits: a message when a newer request took over the
# instance (the caller knows what that means; this module only stops), else None.
SupersededCheck = Callable[[], str | None]
SUPERSEDED_POLL = 0.5  # seconds between checks while waiting out a backoff


class WaitTimeout(TemporaryError):
    """The instance did not converge within the timeout; `.status` is the last status."""

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message, delay=0.0)
        self.status = status


class Superseded(LimaError):
    """A newer request took over the instance mid-convergence; `.status` is the last one."""

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Pass:
    """What one pass did: the decision, the driver's outcome (if it acted), the new status."""

    status: Status
    decision: Decision
    outcome: Outcome | None


def reconcile_pass(
    name: str,
    desired: DesiredState,
    driver: Driver,
    store: StatusStore,
    clock: Clock,
    *,
    rearm_first: bool = False,
    budget_cap: float | None = None,
    previous: Status | None = None,
) -> Pass:
    """One pass, returning the decision too (reconcile_until needs it).

    `previous`: the status of the caller's last pass, used when nothing is stored (an
    instance without a directory, e.g. after a create that failed: its Stalled reason is
    kept in memory, never written into a directory that must not exist).
    """
    now = clock.now()
    loaded = store.load(name)
    status = loaded if loaded is not None else (previous or Status(since=now))
    if rearm_first:
        status = rearm(status, now, desired.generation)
    observed = driver.observe(name)
    status = resync(status, observed, desired, now)
    if rearm_first:
        # resync may just have recorded a crash (a guest that powered off, a host reboot)
        # and armed the crash-loop backoff: a user asking now should not wait it out.
        status = rearm(status, now, desired.generation)
    decision = decide(desired, observed, status, now)
    if not isinstance(decision, Wait | Done | Stalled):
        if status != loaded:
            store.save(name, status)  # `limactl list` sees the fact-based phase during long steps
        action = _cap_budget(decision, budget_cap)
        log.debug("%s: %s -> %s", name, status.phase.value, action)
        outcome = _execute(driver, name, action, desired)
        if not outcome.ok:
            # A wait step whose budget ran out (retry_after == 0) is progress, not a failure.
            level = logging.DEBUG if outcome.retry_after == 0 else logging.INFO
            first_line = (outcome.error or "").split("\n", 1)[0]
            log.log(level, "%s: %s failed: %s", name, type(action).__name__, first_line)
        status = apply_outcome(status, action, outcome, desired, clock.now())
        store.save(name, status)
        return Pass(status, action, outcome)
    if status != loaded:  # a converged pass writes nothing (and fsyncs nothing)
        store.save(name, status)
    return Pass(status, decision, None)


def reconcile_once(
    name: str, desired: DesiredState, driver: Driver, store: StatusStore, clock: Clock
) -> Status:
    """One pass of the pipeline; returns the saved status (the controller's unit of work)."""
    return reconcile_pass(name, desired, driver, store, clock).status


def reconcile_until(
    name: str,
    desired: DesiredState,
    driver: Driver,
    store: StatusStore,
    clock: Clock,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_phase: PhaseCallback | None = None,
    rearm_first: bool = True,
    superseded: SupersededCheck | None = None,
) -> Status:
    """Pass after pass until Done or Stalled (returned), or `timeout` s (WaitTimeout).

    `on_phase(phase, elapsed)` is called whenever the phase changes (and once at the start).
    `rearm_first`: a user's command is a new request, so an earlier Stalled condition and any
    pending backoff are forgotten on the first pass (the controller passes False).
    `superseded()` is asked before every pass, after the last one and every
    SUPERSEDED_POLL s of a wait; a message from it ends the loop with Superseded, so no
    further step (a reboot after a crash backoff) runs for a request nobody holds any more.
    A Stalled result is returned, not raised: check `status.stalled` / `status.last_error`.
    """
    start = clock.now()
    deadline = start + timeout
    last: Phase | None = None
    status = Status(since=start)
    for i in range(MAX_PASSES):
        _check(superseded, status)
        left = deadline - clock.now()
        p = reconcile_pass(
            name, desired, driver, store, clock, rearm_first=rearm_first and i == 0,
            budget_cap=max(1.0, left), previous=status if i else None,
        )
        status = p.status
        if on_phase is not None and status.phase is not last:
            on_phase(status.phase, clock.now() - start)
        last = status.phase
        if isinstance(p.decision, Done | Stalled):
            # The VM may have been killed while this pass ran: not a success to report.
            _check(superseded, status)
            return status
        now = clock.now()
        if isinstance(p.decision, Wait):
            if p.decision.until >= deadline:
                raise _timeout(name, desired, status, timeout, p.decision.reason)
            _sleep(clock, p.decision.until - now, superseded, status)
        elif now >= deadline:
            raise _timeout(name, desired, status, timeout, status.last_error)
    raise RuntimeError(f"{name}: no convergence after {MAX_PASSES} passes (a reconcile bug)")


def _check(superseded: SupersededCheck | None, status: Status) -> None:
    why = superseded() if superseded is not None else None
    if why:
        raise Superseded(why, status)


def _sleep(
    clock: Clock, seconds: float, superseded: SupersededCheck | None, status: Status
) -> None:
    """Sleep, in slices when someone may take the instance over meanwhile."""
    if superseded is None:
        clock.sleep(seconds)
        return
    end = clock.now() + seconds
    while (left := end - clock.now()) > 0:
        clock.sleep(min(left, SUPERSEDED_POLL))
        _check(superseded, status)


def _timeout(
    name: str, desired: DesiredState, status: Status, timeout: float, why: str | None
) -> WaitTimeout:
    msg = (
        f"instance {name!r} did not reach {desired.run_state.value} within {timeout:.0f} s "
        f"(phase {status.phase.value}"
    )
    msg += f"; last error: {why})" if why else ")"
    return WaitTimeout(msg, status)


def _cap_budget(action: Action, cap: float | None) -> Action:
    """Keep a wait step inside the overall timeout."""
    match action:
        case WaitSSH() | WaitProvisioned() | MarkRunning() if cap is not None:
            return dataclasses.replace(action, budget=min(action.budget, cap))
    return action


def _execute(driver: Driver, name: str, action: Action, desired: DesiredState) -> Outcome:
    """Drivers return Outcomes; a LimaError that slips out is classified the same way."""
    try:
        return driver.execute(name, action, desired)
    except TemporaryError as e:
        return Outcome(False, error=str(e), retry_after=e.delay)
    except (PermanentError, SpecError, NotFoundError) as e:
        return Outcome(False, error=str(e), permanent=True)
    except LimaError as e:
        return Outcome(False, error=str(e))
