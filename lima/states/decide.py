"""decide(): the next step for one instance, from desired state, facts and recorded status.

Called by `lima.controller.reconcile` once per pass, between the driver's `observe()` and
`execute()`. Everything here is pure: no disk, no processes, no sockets; time is the `now`
argument. `observe_phase()` is shared with `lima.states.advance`, which writes the phase the
facts prove back into the status before `decide()` runs.
"""

from __future__ import annotations

from lima.states.actions import (
    Abort,
    Action,
    BuildCidata,
    CreateInstance,
    Decision,
    DeleteInstance,
    DiscardSavedState,
    Done,
    MarkRunning,
    ResumeInstance,
    Stalled,
    StartHostAgent,
    StopInstance,
    SuspendInstance,
    Wait,
    WaitProvisioned,
    WaitResumed,
    WaitSSH,
)
from lima.states.model import STALLED, DesiredState, ObservedState, RunState, Status
from lima.states.phases import LIVE_PHASES, Phase
from lima.states.policy import PHASE_DEADLINES, STEP_BUDGET


def observe_phase(observed: ObservedState, status: Status) -> Phase:
    """The phase the facts prove; the recorded status only breaks ties facts cannot.

    Facts win: qemu dead while the status says running means stopped (crashed); a boot-done
    marker holding the current IID means provisioned whatever the file says. The status is
    consulted only for what no fact shows: a stop in progress, a failed attempt waiting for
    its backoff, an unused cidata seed, and "running" (a check that already passed for this
    very boot).

    A complete saved state proves `suspended` once qemu is gone, and `suspending` while it
    is still there (the state is saved, qemu has yet to quit); the host agent's own word
    proves `resuming` (it loads the state) and `suspending` (it saves it).
    """
    recorded = status.phase
    if not observed.created:
        return Phase.FAILED if recorded is Phase.FAILED else Phase.ABSENT
    if observed.vm_alive:
        if recorded in (Phase.STOPPING, Phase.FAILED):
            return recorded
        if observed.resuming:
            return Phase.RESUMING
        if observed.suspending or observed.saved_generation is not None:
            return Phase.SUSPENDING
        iid = observed.cidata_iid or status.iid
        same_boot = iid is not None and iid == status.iid
        if not observed.markers_read:
            # The driver skipped the guest round-trip: markers only move forward within a
            # boot, so what we recorded for this same boot still holds.
            if same_boot and recorded in (Phase.SSH_READY, Phase.PROVISIONED, Phase.RUNNING):
                return recorded
            return Phase.BOOTING
        if iid is not None and observed.boot_done_iid == iid:
            return Phase.RUNNING if same_boot and recorded is Phase.RUNNING else Phase.PROVISIONED
        if iid is not None and observed.ssh_ready_iid == iid:
            return Phase.SSH_READY
        return Phase.BOOTING
    # No VM.
    if observed.saved_generation is not None:
        return Phase.SUSPENDED
    if recorded is Phase.FAILED:
        return Phase.FAILED
    if recorded is Phase.CIDATA_BUILT and status.iid and observed.cidata_iid == status.iid:
        return Phase.CIDATA_BUILT
    if recorded in LIVE_PHASES:
        return Phase.STOPPED  # crashed, or halted
    if recorded in (Phase.CREATED, Phase.STOPPED):
        return recorded
    # Nothing usable recorded (status.json lost): a seed on disk means it has booted before.
    return Phase.STOPPED if observed.cidata_iid else Phase.CREATED


def new_iid(now: float, previous: str | None) -> str:
    """A fresh IID for the next boot (Lima: `iid-<time>`), never the previous one."""
    ms = int(now * 1000)
    iid = f"iid-{ms}"
    return f"iid-{ms + 1}" if iid == previous else iid


def decide(desired: DesiredState, observed: ObservedState, status: Status, now: float) -> Decision:
    """The next Action for this instance, or Wait(until), Done, or Stalled(reason).

    PURE: no disk, no processes, no sockets, no clock (time is `now`). The phase comes from
    the facts (`observe_phase`), not from the file; the file supplies retries, the next
    attempt time (backoff survives restarts), the IID of the boot and the Stalled condition.
    """
    stalled = status.condition(STALLED)
    if status.stalled and stalled is not None and stalled.observed_generation in (
        None,
        desired.generation,
    ):
        # A permanent failure: only a changed spec or a user asking again (rearm) retries.
        return Stalled(stalled.message or stalled.reason)

    phase = observe_phase(observed, status)
    if desired.run_state is RunState.ABSENT:
        return _toward_absent(observed)
    if observed.broken and observed.qemu_pid_alive and observed.saved_generation is not None:
        # A saved state and a qemu without its agent: the state is the truth (the qemu is
        # the paused source of a finished suspend, or a half-loaded resume).
        return StopInstance(force=True)
    if observed.broken:
        if (
            desired.run_state in (RunState.RUNNING, RunState.SUSPENDED)
            and observed.qemu_pid_alive
            and phase not in (Phase.FAILED, Phase.STOPPING)
        ):
            # The guest is fine; only its keeper died: a new one takes over, no reboot.
            iid = observed.cidata_iid or status.iid or ""
            return _gated(StartHostAgent(iid, attach=True), status, now)
        # A qemu left alone still gets a power-down; a lone host agent has no guest.
        return StopInstance(force=desired.force or not observed.qemu_pid_alive)
    if desired.run_state is RunState.STOPPED:
        return _toward_stopped(desired, observed, status, phase, now)
    if desired.run_state is RunState.SUSPENDED:
        return _toward_suspended(desired, observed, status, phase, now)
    if desired.spec is None:
        raise ValueError("decide: a running instance needs a spec")
    return _toward_running(desired, observed, status, phase, now)


def _toward_absent(observed: ObservedState) -> Decision:
    if observed.vm_alive or observed.hostagent_pid_alive:
        return StopInstance(force=True)  # its disks are about to go: no graceful shutdown
    if observed.dir_exists:
        return DeleteInstance()
    return Done("absent")


def _toward_stopped(
    desired: DesiredState, observed: ObservedState, status: Status, phase: Phase, now: float
) -> Decision:
    if observed.vm_alive:
        # First, even when a disk or lima.yaml went missing under the running VM: a stop
        # must still bring it down.
        return StopInstance(force=desired.force or _overdue(status, phase, now))
    if phase is Phase.SUSPENDED:
        if desired.force:
            return DiscardSavedState("stop -f: the saved state is dropped")
        # The guest's file systems deserve a clean shutdown: wake it, then power it down.
        return _resume_or_discard(desired, observed, status, now)
    if not observed.created:
        if desired.spec is None:
            return Done("not created")
        return _gated(CreateInstance(), status, now)  # `limactl create`: create, do not start
    return Done("stopped")


def _toward_suspended(
    desired: DesiredState, observed: ObservedState, status: Status, phase: Phase, now: float
) -> Decision:
    if observed.vm_alive:
        if phase in (Phase.STOPPING, Phase.FAILED):
            return StopInstance(force=_overdue(status, phase, now))  # finish it first
        return _gated(SuspendInstance(), status, now)
    if not observed.created:
        return Done("not created")
    if phase is Phase.SUSPENDED:
        return Done("suspended")
    return Done("stopped")  # nothing runs: there is no state to save


def _resume_or_discard(
    desired: DesiredState, observed: ObservedState, status: Status, now: float
) -> Decision:
    """A suspended instance asked to run: resume when the saved state still matches."""
    if observed.saved_stale:
        return DiscardSavedState(observed.saved_stale)
    if desired.generation and observed.saved_generation != desired.generation:
        return DiscardSavedState("lima.yaml changed since the instance was suspended")
    return _gated(ResumeInstance(observed.cidata_iid or status.iid or ""), status, now)


def _toward_running(
    desired: DesiredState, observed: ObservedState, status: Status, phase: Phase, now: float
) -> Decision:
    if not observed.created:
        return _gated(CreateInstance(), status, now)
    if (desired.restart and observed.vm_alive and phase in _RESTARTABLE
            and status.generation not in (None, desired.generation)):
        # The running boot was built from another spec: power it down; the passes after
        # boot it again from this one (BuildCidata records the new generation).
        return StopInstance(force=False)
    iid = observed.cidata_iid or status.iid or ""
    match phase:
        case Phase.FAILED if observed.vm_alive:
            # Leftover of the failed attempt, no backoff; still a power-down first.
            return StopInstance(force=False)
        case Phase.STOPPING:
            return StopInstance(force=_overdue(status, phase, now))  # finish it, then boot
        case Phase.SUSPENDING:
            return _gated(SuspendInstance(), status, now)  # finish it, then resume
        case Phase.SUSPENDED:
            return _resume_or_discard(desired, observed, status, now)
        case Phase.RESUMING:
            if _overdue(status, phase, now):
                return Abort(f"the guest did not resume within {PHASE_DEADLINES[phase]:.0f} s")
            return _gated(WaitResumed(iid, _budget(status, phase, now)), status, now)
        case Phase.FAILED | Phase.CREATED | Phase.STOPPED | Phase.ABSENT:
            return _gated(BuildCidata(new_iid(now, status.iid)), status, now)
        case Phase.CIDATA_BUILT:
            return _gated(StartHostAgent(iid), status, now)
        case Phase.BOOTING:
            if _overdue(status, phase, now):
                return Abort(f"ssh did not come up within {PHASE_DEADLINES[phase]:.0f} s")
            return _gated(WaitSSH(iid, _budget(status, phase, now)), status, now)
        case Phase.SSH_READY:
            if _overdue(status, phase, now):
                return Abort(f"provisioning did not finish within {PHASE_DEADLINES[phase]:.0f} s")
            return _gated(WaitProvisioned(iid, _budget(status, phase, now)), status, now)
        case Phase.PROVISIONED:
            if _overdue(status, phase, now):
                return Abort(f"the instance was not ready within {PHASE_DEADLINES[phase]:.0f} s")
            return _gated(MarkRunning(iid, _budget(status, phase, now)), status, now)
        case Phase.RUNNING:
            return Done("running")
    raise AssertionError(f"unhandled phase {phase}")  # pragma: no cover


_RESTARTABLE = frozenset({Phase.BOOTING, Phase.SSH_READY, Phase.PROVISIONED, Phase.RUNNING})


def _gated(action: Action, status: Status, now: float) -> Decision:
    """The action, unless a backoff from an earlier failure is still running."""
    if status.next_attempt is not None and now < status.next_attempt:
        return Wait(status.next_attempt, status.last_error or "backing off")
    return action


def _elapsed(status: Status, phase: Phase, now: float) -> float:
    # `since` belongs to the recorded phase; a phase just rebuilt from facts starts now.
    return now - status.since if status.phase is phase else 0.0


def _overdue(status: Status, phase: Phase, now: float) -> bool:
    deadline = PHASE_DEADLINES.get(phase)
    return deadline is not None and _elapsed(status, phase, now) > deadline


def _budget(status: Status, phase: Phase, now: float) -> float:
    left = PHASE_DEADLINES[phase] - _elapsed(status, phase, now)
    return max(1.0, min(STEP_BUDGET, left))
