"""What a changed lima.yaml asks of an instance: the folder controller's plan step.

`lima.controller.folder.FolderController._sync_file` calls `Planner.plan` once per pass
with the resolved file version; it answers with a `Target` (the desired state, the text to
create the instance with, and a step to run first under the instance lock) or None (leave
the instance alone). The plan is the one `limactl apply` makes (lima.states.drift.classify
against lima.applied.json), so a folder and a verb never disagree on what a change needs.
`note_applied` runs after a pass: it records that a boot of this version now runs.
Kept apart from the controller's wiring (watching, queues, pruning) so each stays small.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lima import paths, schemas
from lima.controller.reconcile import Pass
from lima.controller.status_store import StatusStore
from lima.drivers.applied import Applied, read_applied, write_applied
from lima.errors import LimaError
from lima.fsutil import atomic_write
from lima.schemas.fields import Drift
from lima.states import runstate
from lima.states.drift import FieldChange, Plan, action_for, classify
from lima.states.model import RESTART_REQUIRED, CondStatus, DesiredState, RunState, Status
from lima.states.phases import Phase
from lima.states.runstate import RUN_STATE_REFUSED


@dataclass(frozen=True)
class Target:
    """What one pass drives the instance to: the desired state (with the lima.yaml text to
    create it with, only before it exists), and what to do first under the lock."""

    desired: DesiredState
    before: Callable[[], None] | None = None
    # The file asks for `suspended` and the instance does not run yet: it is driven to
    # running first, and to `then` by the passes after (lima.states.runstate).
    then: RunState | None = None
    refused: str = ""  # why the file's run state cannot be reached (it stays running)


# An instance with a status but neither lima.applied.json nor a readable stored lima.yaml
# (it never booted to the end): nothing to compare with, so the new version is booted.
_UNKNOWN_OLD = Plan((FieldChange("(no applied spec to compare with)", None, None,
                                 Drift.RESTART, action_for(Drift.RESTART)),))

# Called with the plan's fields (verdict, file, digest, changes, action...) when there is
# one to report; the controller logs it once per file version.
Report = Callable[..., None]


class Planner:
    def __init__(self, restart: str, store: StatusStore,
                 now: Callable[[], float] = time.time) -> None:
        self.restart = restart  # "auto" (one restart) or "stage" (RestartRequired)
        self.store = store
        self.now = now

    def plan(
        self, name: str, path: Path, resolved: schemas.Resolved, status: Status | None,
        digest: str, report: Report,
    ) -> Target | None:
        """What a file version asks of the instance, or None to leave it alone.

        Live changes are recorded without a restart; restart changes are applied with one
        restart (--restart=auto) or staged as RestartRequired (--restart=stage); recreate
        and reject changes are never done here: reported, the instance kept running on the
        spec it has."""
        reported: list[bool] = []

        def spec_report(**fields: Any) -> None:
            reported.append(True)
            report(**fields)

        target = self._plan(name, path, resolved, status, digest, spec_report)
        if target is None:
            return None
        now = _RUN_STATE_OF.get(status.phase) if status is not None else None
        want_text = resolved.spec.run_state
        if not reported and now is not None and now != want_text:
            # Only the run state changed: a plan of its own (live: no restart, no recreate).
            report(verdict=Drift.LIVE.value, file=str(path), digest=digest[:12],
                   changes=[{"path": runstate.FIELD, "old": now, "new": want_text,
                             "class": Drift.LIVE.value, "action": f"drive to {want_text}"}],
                   action=f"{now} -> {want_text}; no restart")
        # The run state the file asks for (x-limapy.runState), where it can be reached.
        want = runstate.wanted(resolved.spec)
        refused = runstate.suspend_refusal(resolved.spec) if want is RunState.SUSPENDED else ""
        if refused:
            want = RunState.RUNNING
        step = runstate.next_run_state(want, status.phase if status is not None else None)
        mark = functools.partial(mark_run_state_refused, self.store, name, refused, self.now)
        return replace(target, desired=replace(target.desired, run_state=step),
                       before=_then(target.before, mark), refused=refused,
                       then=want if step is not want else None)

    def _plan(
        self, name: str, path: Path, resolved: schemas.Resolved, status: Status | None,
        digest: str, report: Report,
    ) -> Target | None:
        """`plan` for the spec; the run state is set by `plan`."""
        new_gen = resolved.generation

        def text() -> str:  # the lima.yaml text: built only when written, not every resync
            return schemas.dump_yaml(resolved.document.data)

        if status is None or not status.generation:
            # Never booted (or its status is lost): the reconciler creates what is missing.
            return Target(DesiredState(resolved.spec, new_gen, RunState.RUNNING,
                                       document=text()))
        inst = paths.instance_dir(name)
        applied = read_applied(inst)
        old_filled: dict[str, Any] | None = None
        if applied is not None:
            old_gen, old_filled = applied.generation, applied.filled
            changed = old_gen != new_gen
        else:
            # Booted before lima.applied.json existed: status.json holds the filled spec's
            # hash or the intent's; the stored lima.yaml is the old side.
            old_gen = status.generation
            changed = old_gen not in (new_gen, schemas.generation(resolved.filled))
            if changed:
                with contextlib.suppress(LimaError):
                    old_filled = schemas.load_instance(name).filled
        if not changed:
            desired = DesiredState(resolved.spec, old_gen, RunState.RUNNING)
            before = None
            if status.is_true(RESTART_REQUIRED):
                # A staged version was taken back: the stored lima.yaml must follow.
                before = functools.partial(write_spec, inst, text)
            return Target(desired, before)
        plan = (classify(old_filled, resolved.filled, restart=self.restart)
                if old_filled is not None else _UNKNOWN_OLD)
        verdict = plan.verdict if plan.changes else Drift.LIVE.value
        fields: dict[str, Any] = {"verdict": verdict, "file": str(path), "digest": digest[:12],
                                  "changes": plan.to_json()["changes"]}
        if verdict in (Drift.RECREATE.value, Drift.REJECT.value):
            if verdict == Drift.RECREATE.value:
                action = (f"none; the controller never rebuilds a disk: run `limactl apply "
                          f"--recreate {path}` by hand (the disk is rebuilt, its data lost)")
            else:
                action = "none; the instance is left as it is (fix the file)"
            report(**fields, action=action)
            return _keep(name, inst, applied, old_gen)
        stage = verdict == Drift.RESTART.value and self.restart == "stage"
        if verdict == Drift.LIVE.value:
            action = "recorded; no restart"
            before = functools.partial(self._record_live, name, inst, resolved, text)
        else:
            action = ("staged; RestartRequired until the next start" if stage
                      else "one restart with the new spec")
            before = functools.partial(write_spec, inst, text)
        report(**fields, restart=self.restart, action=action)
        desired = DesiredState(resolved.spec, new_gen, RunState.RUNNING,
                               restart=verdict == Drift.RESTART.value and not stage)
        return Target(desired, before)

    def _record_live(self, name: str, inst: Path, new: schemas.Resolved,
                     text: Callable[[], str]) -> None:
        """Under the lock: the running boot now counts as built from `new` (as apply's
        live path: lima.yaml, lima.applied.json, status.json's generation)."""
        write_spec(inst, text)
        write_applied(inst, new.generation, new.filled, document=text())
        from lima.drivers.hostagent import reload_hostagent  # deferred: the fake's tests

        reload_hostagent(inst)  # portForwards follow without a restart
        status = self.store.load(name)
        if status is not None and status.generation:
            self.store.save(name, replace(status, generation=new.generation))


def mark_run_state_refused(store: StatusStore, name: str, refused: str,
                           now: Callable[[], float] = time.time) -> None:
    """status.json's RunStateRefused condition says why the file's run state is not reached
    (`refused`), or is cleared once it can be; unchanged conditions are not rewritten. The
    planner calls it under the instance lock, `limactl apply` after driving the instance."""
    status = store.load(name)
    old = status.condition(RUN_STATE_REFUSED) if status is not None else None
    if status is None or (not refused and old is None):
        return
    if old is not None and old.message == refused and bool(refused) == status.is_true(
            RUN_STATE_REFUSED):
        return
    store.save(name, status.with_condition(
        RUN_STATE_REFUSED, CondStatus.TRUE if refused else CondStatus.FALSE,
        "SuspendImpossible" if refused else "Reached", refused, now(), status.generation))


_RUN_STATE_OF = {Phase.RUNNING: "running", Phase.STOPPED: "stopped",
                 Phase.SUSPENDED: "suspended"}


def _then(first: Callable[[], None] | None,
          second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        if first is not None:
            first()
        second()
    return both


def _keep(name: str, inst: Path, applied: Applied | None, old_gen: str) -> Target | None:
    """A refused version (recreate, reject): the instance keeps the spec its boot was built
    from. A version staged earlier (the stored lima.yaml ahead of that spec) is superseded
    by the file that replaced it, so the stored lima.yaml goes back to the applied text and
    no later boot (a crash, a hand-made restart) picks the staged one up."""
    if applied is not None and applied.document is not None:
        text = applied.document
        try:
            kept = schemas.resolve("-", name=name, stdin=text.encode())
        except LimaError:
            kept = None  # it no longer resolves here (a template gone): keep what is stored
        if kept is not None:
            return Target(DesiredState(kept.spec, old_gen, RunState.RUNNING),
                          functools.partial(write_spec, inst, lambda: text))
    try:
        stored = schemas.load_instance(name)
    except LimaError:
        return None  # nothing stored to keep running on; wait for the file
    return Target(DesiredState(stored.spec, old_gen, RunState.RUNNING))


def note_applied(name: str, resolved: schemas.Resolved, desired: DesiredState,
                 p: Pass) -> None:
    """A boot of this file version runs: make sure lima.applied.json says so. The qemu
    driver writes it when it builds the boot; a driver that does not (the fake) gets
    it here, so the next version is planned against what runs."""
    gen = desired.generation
    if gen != resolved.generation or p.status.generation != gen:
        return
    if p.status.phase is not Phase.RUNNING:
        return
    inst = paths.instance_dir(name)
    applied = read_applied(inst)
    if (applied is None or applied.generation != gen) and inst.is_dir():
        write_applied(inst, gen, resolved.filled,
                      document=schemas.dump_yaml(resolved.document.data))


def write_spec(inst: Path, text: Callable[[], str]) -> None:
    """The stored lima.yaml the next boot (and the host agent) reads; unchanged text is
    not written again (a staged plan is looked at every resync)."""
    p, data = inst / paths.LIMA_YAML, text()
    with contextlib.suppress(OSError):
        if p.read_text() == data:
            return
    if inst.is_dir():
        atomic_write(p, data)
