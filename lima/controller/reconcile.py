"""The reconcile loop: load status, observe, decide, execute, advance, save.

Every verb (create, start, stop, delete, apply) and the folder controller drive instances
through these two functions; they differ only in the DesiredState they pass. The instance
lock (`lima.controller.lock.instance_lock`) is held per pass, never across the waits
between passes: callers hold it around `reconcile_once()` (the controller's unit of work),
and hand `reconcile_until()` a `hold` that takes it for each pass, so another verb or a
controller worker gets its turn while this one waits. `reconcile_until()` repeats passes
until the instance converges, stalls, or the overall timeout passes, reporting each new
phase.

Two guards keep a fault from turning into a spin or an internal error: a status.json the OS
will not write (disk full, read-only LIMA_HOME) is reported with its path and the OS's
reason, after the VM was still brought down when that was asked; and a step that keeps
coming back with the same result while the status does not move stalls the instance with
the step's name instead of repeating it thousands of times.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from lima.controller.clock import Clock
from lima.controller.driver import Driver
from lima.controller.status_store import StatusStore, StatusWriteError
from lima.errors import LimaError, NotFoundError, PermanentError, SpecError, TemporaryError
from lima.states.actions import (
    Abort,
    Action,
    Decision,
    Done,
    MarkRunning,
    Outcome,
    Stalled,
    StopInstance,
    Wait,
    WaitProvisioned,
    WaitSSH,
)
from lima.states.advance import apply_outcome, rearm, resync, stall
from lima.states.decide import decide
from lima.states.model import DesiredState, RunState, Status
from lima.states.phases import Phase

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # `--timeout` default: 10 min for the whole wait
MAX_PASSES = 10_000  # a loop that makes no progress is a bug; fail loudly instead of spinning
# The same step with the same result and the same status this many times in one run: the
# facts do not follow what the step did (a bug, or something outside undoing it). Retrying
# cannot help, so the instance stalls with the step's name.
MAX_REPEATS = 5
# OS errors that stay until the user acts (free space, fix permissions or the mount).
_USER_MUST_ACT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

PhaseCallback = Callable[[Phase, float], None]
# Asked before each pass and during waits: a message when a newer request took over the
# instance (the caller knows what that means; this module only stops), else None.
SupersededCheck = Callable[[], str | None]
SUPERSEDED_POLL = 0.5  # seconds between checks while waiting out a backoff
# Takes the instance lock for one pass (raising BusyError when it cannot).
PassHold = Callable[[], AbstractContextManager[object]]


class WaitTimeout(TemporaryError):
    """The instance did not converge within the timeout; `.status` is the last status."""

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message, delay=0.0)
        self.status = status


class StatusNotRecorded(LimaError):
    """status.json could not be written; `.status` is what should have been recorded.

    Raised once a stop or delete is done (the VM is down; only the record is missing), or
    at once for a start, before any further step: booting on with nothing recorded would
    forget retries and backoff.
    """

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message)
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
    unsaved: StatusWriteError | None = None  # the status of this pass is not on disk


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
    trust_previous: bool = False,
) -> Pass:
    """One pass, returning the decision too (reconcile_until needs it).

    `previous`: the status of the caller's last pass, used when nothing is stored (an
    instance without a directory, e.g. after a create that failed: its Stalled reason is
    kept in memory, never written into a directory that must not exist), or always with
    `trust_previous` (the last save failed, so the file is stale).

    A status the OS will not write does not stop a pass that brings the VM down (that is
    what a user needs most when the disk is full); it ends one that would start or build
    something before the step runs. Either way `Pass.unsaved` says so.
    """
    now = clock.now()
    loaded = store.load(name)
    if trust_previous and previous is not None:
        status = previous
    else:
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
        unsaved = None
        if status != loaded:
            # `limactl list` sees the fact-based phase during long steps.
            unsaved = _save(store, name, status)
            if unsaved is not None and desired.run_state is RunState.RUNNING:
                return Pass(status, decision, None, unsaved)
        action = _cap_budget(decision, budget_cap)
        log.debug("%s: %s -> %s", name, status.phase.value, action)
        outcome = _execute(driver, name, action, desired)
        if not outcome.ok:
            # A wait step whose budget ran out (retry_after == 0) is progress, not a failure.
            level = logging.DEBUG if outcome.retry_after == 0 else logging.INFO
            first_line = (outcome.error or "").split("\n", 1)[0]
            log.log(level, "%s: %s failed: %s", name, type(action).__name__, first_line)
        status = apply_outcome(status, action, outcome, desired, clock.now())
        return Pass(status, action, outcome, _save(store, name, status))
    if status != loaded:  # a converged pass writes nothing (and fsyncs nothing)
        return Pass(status, decision, None, _save(store, name, status))
    return Pass(status, decision, None)


def _save(store: StatusStore, name: str, status: Status) -> StatusWriteError | None:
    try:
        store.save(name, status)
    except StatusWriteError as e:
        log.debug("%s: %s", name, e)
        return e
    return None


def reconcile_once(
    name: str, desired: DesiredState, driver: Driver, store: StatusStore, clock: Clock
) -> Status:
    """One pass of the pipeline; returns the saved status (the controller's unit of work).

    StatusWriteError when the status could not be saved (the pass's step did run, unless
    it would have started something: see `reconcile_pass`).
    """
    p = reconcile_pass(name, desired, driver, store, clock)
    if p.unsaved is not None:
        raise p.unsaved
    return p.status


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
    wakeup: threading.Event | None = None,
    hold: PassHold | None = None,
) -> Status:
    """Pass after pass until Done or Stalled (returned), or `timeout` s (WaitTimeout).

    `on_phase(phase, elapsed)` is called whenever the phase changes (and once at the start).
    `rearm_first`: a user's command is a new request, so an earlier Stalled condition and any
    pending backoff are forgotten on the first pass (the controller passes False).
    `superseded()` is asked before every pass, after the last one and every
    SUPERSEDED_POLL s of a wait; a message from it ends the loop with Superseded, so no
    further step (a reboot after a crash backoff) runs for a request nobody holds any more.
    `wakeup` set during a wait ends the wait at once and runs the next pass (it is cleared
    first): a caller that learns of a change (a file event) needs no backoff to pass.
    `hold()` is entered around each pass alone (the instance lock): the waits between
    passes run without it.
    A Stalled result is returned, not raised: check `status.stalled` / `status.last_error`.
    The same step ending the same way MAX_REPEATS times with the status unmoved stalls the
    instance (see `_repeats`). A status.json that cannot be written raises
    StatusNotRecorded: at once when bringing the instance up, at the end when bringing it
    down (the VM is stopped first).
    """
    start = clock.now()
    deadline = start + timeout
    last: Phase | None = None
    status = Status(since=start)
    guard = RepeatGuard()
    unsaved: StatusWriteError | None = None
    for i in range(MAX_PASSES):
        _check(superseded, status)
        with (hold or nullcontext)():
            # Asked again once the lock is ours: the request may have come while we waited.
            _check(superseded, status)
            left = deadline - clock.now()
            p = reconcile_pass(
                name, desired, driver, store, clock, rearm_first=rearm_first and i == 0,
                budget_cap=max(1.0, left), previous=status if i else None,
                trust_previous=unsaved is not None,
            )
            status = p.status
            unsaved = p.unsaved
            if on_phase is not None and status.phase is not last:
                on_phase(status.phase, clock.now() - start)
            last = status.phase
            if unsaved is not None and desired.run_state is RunState.RUNNING:
                raise _not_recorded(name, desired, p, unsaved)
            p = guard.check(name, p, desired, store, clock)
            status, unsaved = p.status, p.unsaved
        if isinstance(p.decision, Done | Stalled):
            # The VM may have been killed while this pass ran: not a success to report.
            _check(superseded, status)
            if unsaved is not None:
                raise _not_recorded(name, desired, p, unsaved)
            return status
        now = clock.now()
        if isinstance(p.decision, Wait):
            if p.decision.until >= deadline:
                raise _timeout(name, desired, status, timeout, p.decision.reason)
            _sleep(clock, p.decision.until - now, superseded, status, wakeup)
        elif now >= deadline:
            raise _timeout(name, desired, status, timeout, status.last_error)
    raise RuntimeError(f"{name}: no convergence after {MAX_PASSES} passes (a reconcile bug)")


class RepeatGuard:
    """Counts passes that got nowhere new (see `_fingerprint`); the MAX_REPEATS-th stalls
    the instance with the step's name instead of running it again. One per convergence
    (reconcile_until) or per instance and file version (the folder controller)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[object, ...], int] = {}

    def check(
        self, name: str, p: Pass, desired: DesiredState, store: StatusStore, clock: Clock
    ) -> Pass:
        """`p`, or a Stalled pass (saved) when it repeats a step once too often."""
        if p.outcome is None or isinstance(p.decision, Wait | Done | Stalled):
            return p
        key = _fingerprint(p)
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] < MAX_REPEATS:
            return p
        status = stall(p.status, _no_progress(p, self.seen[key]), clock.now(),
                       desired.generation)
        return Pass(status, Stalled(status.last_error or ""), p.outcome,
                    _save(store, name, status))


def _fingerprint(p: Pass) -> tuple[object, ...]:
    """What says a pass got nowhere new: the step's kind (not its arguments: a fresh IID
    each time is no progress either), its result, and the status it left, times aside.
    A step still waiting or failing counts a retry, so it never repeats a fingerprint;
    its phase deadline bounds it instead."""
    out = p.outcome
    result = (out.ok, out.permanent, out.error) if out is not None else None
    s = p.status
    return (type(p.decision).__name__, result, s.phase, s.retries, s.restarts, s.stalled)


def _no_progress(p: Pass, times: int) -> str:
    step = type(p.decision).__name__
    out = p.outcome
    if out is None or out.ok:
        result = "it succeeded each time"
    else:
        result = f"it failed the same way each time: {(out.error or '').splitlines()[0]}"
    return (
        f"no progress: {step} ran {times} times and the instance stayed {p.status.phase.value}"
        f" ({result}); what the step did does not show in the instance's files, so doing it"
        " again cannot help. Look at the instance directory and `limactl list`, then run the"
        " command again (with --debug for details)"
    )


def _not_recorded(
    name: str, desired: DesiredState, p: Pass, err: StatusWriteError
) -> StatusNotRecorded:
    s = p.status
    if isinstance(p.decision, Done):
        head = f"instance {name!r} is {desired.run_state.value}, but its status was not recorded"
    elif desired.run_state is RunState.RUNNING:
        head = f"instance {name!r} was not started further: its status cannot be recorded"
        out = p.outcome
        if out is not None and not out.ok and out.error:
            step = type(p.decision).__name__
            head += f" (and {step} failed: {out.error.splitlines()[0]})"
    else:  # a stop or delete that stalled
        why = (s.last_error or "").split("\n", 1)[0]
        head = f"instance {name!r} is stalled ({why}), and that could not be recorded"
    return StatusNotRecorded(
        f"{head}: {err}. Free space or make {err.path.parent} writable, then run the"
        " command again", s,
    )


def _check(superseded: SupersededCheck | None, status: Status) -> None:
    why = superseded() if superseded is not None else None
    if why:
        raise Superseded(why, status)


def _sleep(
    clock: Clock,
    seconds: float,
    superseded: SupersededCheck | None,
    status: Status,
    wakeup: threading.Event | None = None,
) -> None:
    """Sleep (one `clock.wait`), in slices when someone may take the instance over
    meanwhile; a set `wakeup` ends it early (and is cleared for the next wait)."""
    if superseded is None:
        if clock.wait(seconds, wakeup) and wakeup is not None:
            wakeup.clear()
        return
    end = clock.now() + seconds
    while (left := end - clock.now()) > 0:
        woken = clock.wait(min(left, SUPERSEDED_POLL), wakeup)
        _check(superseded, status)
        if woken and wakeup is not None:
            wakeup.clear()
            return


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
    except OSError as e:
        # A write refused by the OS (disk full, read-only LIMA_HOME) is no bug: name the
        # file. Starting anything cannot succeed until the user acts, so it stalls; a step
        # that brings the VM down is retried, and the next pass reads what really happened.
        where = f"{e.filename}: " if e.filename else ""
        msg = f"{type(action).__name__}: {where}{e.strerror or e}"
        down = isinstance(action, StopInstance | Abort)
        return Outcome(False, error=msg, permanent=e.errno in _USER_MUST_ACT and not down)
