"""Lifecycle verbs: apply, stop (`start` is lima.commands.startform). Each builds a
DesiredState and hands it to the reconciler (lima.controller.reconcile), which takes the
instance lock for each pass (never across the waits between passes); none starts anything
itself.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from lima import paths
from lima.errors import BusyError, LimaError, NotFoundError
from lima.godur import DURATION
from lima.states.policy import STEP_BUDGET

if TYPE_CHECKING:
    from lima.commands.diff import InstancePlan
    from lima.controller.clock import Clock
    from lima.controller.driver import Driver
    from lima.controller.lock import Request
    from lima.schemas import Resolved
    from lima.schemas.spec import InstanceSpec
    from lima.states.actions import Action, Outcome
    from lima.states.model import DesiredState, ObservedState


_BOOT_PATH = ("created", "cidata_built", "booting", "ssh_ready", "provisioned", "running")


def _say(msg: str) -> None:
    click.echo(msg, err=True)


class _Counting:
    """Wraps a driver to know whether a reconcile did anything (for "unchanged")."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.actions: list[str] = []

    def observe(self, name: str) -> ObservedState:
        return self.inner.observe(name)

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        self.actions.append(type(action).__name__)
        return self.inner.execute(name, action, desired)


def load_stored(name: str) -> Resolved:
    """The instance's stored lima.yaml, resolved. A damaged one (garbage, invalid YAML,
    empty, unreadable) is a LimaError at once: its problems at FILE:LINE, then what to do.

    Nothing may boot from it: the host agent reads it again, and booting a spec other
    than the stored one would leave lima.yaml and the VM disagreeing.
    """
    from lima import schemas
    from lima.drivers import procs
    from lima.errors import SpecError

    try:
        return schemas.load_instance(name)
    except SpecError as exc:
        inst = paths.instance_dir(name)
        if procs.qemu_pid(inst) is not None:
            state = (f"instance {name!r} is running, but its {paths.LIMA_YAML} is damaged (see"
                     f" above), so nothing was checked or changed; the VM is left as it is"
                     f" (`limactl stop {name}` still works)")
        else:
            state = (f"instance {name!r} cannot be started: its {paths.LIMA_YAML} is damaged"
                     f" (see above)")
        raise LimaError(
            f"{exc}\n{state}. Fix {inst / paths.LIMA_YAML}, or start over with `limactl delete"
            f" {name}` and apply again (that deletes the instance's disk, and its data)"
        ) from None


def _stored_generation(name: str, *, strict: bool = False) -> str | None:
    """The generation the instance was last driven with (status.json), else the one of its
    stored lima.yaml (a created, never started instance). `strict`: a damaged stored
    lima.yaml is an error (see `load_stored`) even when status.json has a generation;
    else it gives None (a stop needs no spec)."""
    from lima import schemas
    from lima.controller.status_store import StatusStore

    resolved = load_stored(name) if strict else None
    status = StatusStore().load(name)
    if status is not None and status.generation:
        return status.generation
    from lima.errors import SpecError

    try:
        return schemas.generation((resolved or schemas.load_instance(name)).filled)
    except (SpecError, NotFoundError, OSError):
        return None


def converge(
    name: str,
    run_state: str,
    *,
    spec: InstanceSpec | None,
    generation: str,
    document: str | None = None,
    timeout: float = 600.0,
    wait_lock: bool = True,
    verb: str = "apply",
    request: Request | None = None,
    before: Callable[[], None] | None = None,
    lock_timeout: float | None = None,
    driver: Driver | None = None,
    clock: Clock | None = None,
    restart: bool = False,
    force: bool = False,
) -> list[str]:
    """Drive instance `name` to `run_state`; print one line per phase; return the actions.

    The verb's request is recorded first (`request`, when the caller already wrote it) and
    re-read before every pass: when another process asks meanwhile for the instance to be
    stopped or deleted (`stop -f`, `delete -f`), this gives up at once. The instance lock
    is taken for each pass (waiting up to `lock_timeout`, default `timeout`, when another
    process holds it) and released between passes. `before` runs under the lock, before
    the first pass. `driver` and `clock` are for tests.

    Raises LimaError (with the reason and the last lines of the logs) when it stalls, times
    out or is superseded.
    """
    from lima.controller.clock import SystemClock
    from lima.controller.lock import instance_lock, superseded_by, write_request
    from lima.controller.reconcile import WaitTimeout, reconcile_until
    from lima.controller.status_store import StatusStore
    from lima.drivers.instance import QemuDriver, failure_context
    from lima.states.model import DesiredState, RunState

    mine = request or write_request(name, run_state, f"limactl {verb}")

    def superseded() -> str | None:
        newer = superseded_by(name, mine)
        if newer is None:
            return None
        what = "deleted" if newer.run_state == "absent" else "stopped"
        return (f"instance {name} was {what} by `{newer.command}` (PID {newer.pid}) while "
                f"this {verb} ran")

    desired = DesiredState(spec=spec, generation=generation, run_state=RunState(run_state),
                           restart=restart, force=force, document=document)
    driver = _Counting(driver or QemuDriver())
    start = time.monotonic()
    shown: list[str] = []

    def on_phase(phase: object, elapsed: float) -> None:
        label = str(getattr(phase, "value", phase))
        if not driver.actions and label in ("running", "stopped", "absent"):
            return
        # One pass can cross several phases of the boot path (the facts showed the later
        # one already): name each phase passed, so every run prints the same lines.
        if shown and shown[-1] in _BOOT_PATH and label in _BOOT_PATH:
            passed = _BOOT_PATH[_BOOT_PATH.index(shown[-1]) + 1:_BOOT_PATH.index(label)]
        else:
            passed = ()
        for step in (*passed, label):
            shown.append(step)
            _say(f"[{name}] {step:<13} {time.monotonic() - start:6.1f} s")

    pending = [before] if before is not None else []

    @contextmanager
    def hold() -> Iterator[None]:
        # One pass under the lock; the waits between passes leave it to others (another
        # verb, a controller worker). Busy: retry with a backoff (lock.py), then BusyError
        # naming the holder.
        with instance_lock(name, wait=wait_lock,
                           timeout=timeout if lock_timeout is None else lock_timeout):
            while pending:
                pending[0]()
                pending.pop()
            yield

    try:
        status = reconcile_until(
            name, desired, driver, StatusStore(), clock or SystemClock(),
            timeout=timeout, on_phase=on_phase, superseded=superseded, hold=hold,
        )
    except WaitTimeout as exc:
        ctx = failure_context(paths.instance_dir(name))
        raise LimaError(f"{exc}\n{ctx}".rstrip()) from exc
    if status.stalled:
        ctx = failure_context(paths.instance_dir(name))
        raise LimaError(
            f"instance {name!r} is stalled: {status.last_error or 'see status.json'}\n{ctx}"
            .rstrip()
        )
    from lima.states.model import DEGRADED

    cond = status.condition(DEGRADED)
    if cond is not None and cond.status.value == "True":
        from lima.states.advance import GUEST_UNRESPONSIVE

        if cond.reason == GUEST_UNRESPONSIVE and run_state == "running":
            # Not Ready, and not killed either: a hung or paused guest may come back.
            raise LimaError(
                f"instance {name!r} is not ready: {cond.message}. It was left running as it "
                f"is; wait for it, or run `limactl stop -f {name}` and apply again"
            )
        _say(f"[{name}] degraded: {cond.message}")
    return driver.actions


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--name", default=None, help="Instance name (only with a single FILE).")
@click.option("--timeout", type=DURATION, default="10m", show_default=True,
              help="How long to wait for the instance to be running (Go duration: 10m, "
                   "1h30m; a bare number is seconds).")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (one row per changed field) and change nothing; exit 0 "
                   "when nothing would change, 2 when something would.")
@click.option("--restart", "restart_policy", type=click.Choice(["auto", "stage"]),
              default="auto", show_default=True,
              help="Changes that need a restart: auto stops and boots the instance with the "
                   "new spec; stage records them (RestartRequired), applied at the next start.")
@click.option("--recreate", is_flag=True,
              help="Allow changes that rebuild the disk (images, arch, vmType, os): the "
                   "instance's disk and all data in it are lost.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="The plan's format with --dry-run (json: see "
                                      "`limactl diff --help` for its shape).")
def apply(files: tuple[str, ...], name: str | None, timeout: float, dry_run: bool,
          restart_policy: str, recreate: bool, fmt: str) -> int:
    """Create each instance when missing, then drive it to Running with FILE's spec.

    Every FILE is validated and planned before anything is stopped: a change is live
    (applied without a restart), restart, recreate (needs --recreate) or reject (a disk
    shrink; nothing is touched). Exit 1 on any error, with every instance left as it was.
    """
    from lima import schemas
    from lima.commands.diff import DIFFERENT, SAME, plan_instance, render, would_change
    from lima.commands.instances import instance_name
    from lima.schemas.templates import read_stdin

    if name is not None and len(files) > 1:
        raise LimaError("--name can only be used with a single file")
    timeout = timeout if timeout > 0 else 600.0
    # Every name is checked, every file validated and every plan made before anything is
    # touched: a bad second file must not leave the first instance restarted.
    names = [instance_name(name, locator) for locator in files]
    stdin = read_stdin() if "-" in files else None
    resolved = [schemas.resolve(locator, name=inst_name, stdin=stdin)
                for locator, inst_name in zip(files, names, strict=True)]
    plans = [plan_instance(n, r, restart=restart_policy, recreate=recreate)
             for n, r in zip(names, resolved, strict=True)]
    if dry_run:
        click.echo(render(plans, fmt))
        return DIFFERENT if any(would_change(p) for p in plans) else SAME
    _refuse(plans, recreate)
    for plan, new in zip(plans, resolved, strict=True):
        for w in () if plan.exists else new.warnings:
            _say(str(w))
        outcome = _apply_one(plan, new, restart_policy, timeout)
        if outcome != "unchanged":
            show_message(plan.name)
        click.echo(f"{plan.name}: {outcome}")
    return 0


def show_message(name: str) -> None:
    """lima.yaml's `message`, rendered (lima.drivers.message), as Lima prints it once the
    instance runs: a header line, then the text as is, for copy and paste. Before it, where
    the VNC display is (`video.display: vnc`), as Lima's host agent reports it."""
    from lima.commands.listing import instance_record
    from lima.drivers.display import vnc_summary

    for line in vnc_summary(paths.instance_dir(name)):
        _say(f"[{name}] {line}")
    rec = instance_record(name)
    text = str(rec.get("message") or "")
    if not text.strip():
        return
    _say(f"Message from the instance {name!r}:")
    for line in text.rstrip("\n").splitlines():
        click.echo(line, err=True)


def _refuse(plans: list[InstancePlan], recreate: bool) -> None:
    """LimaError naming every change apply will not make (nothing has been touched yet)."""
    from lima.schemas.fields import Drift

    problems = []
    for p in plans:
        if p.plan is None or not p.changed:
            continue
        for c in p.plan.of(Drift.REJECT):
            problems.append(f"{p.name}: {c.path}: {_short(c.old)} -> {_short(c.new)}: {c.action}")
        if not recreate:
            fields = [c.path for c in p.plan.of(Drift.RECREATE)]
            if fields:
                problems.append(
                    f"{p.name}: {', '.join(fields)} changed: that needs a new disk; pass "
                    f"--recreate to delete instance {p.name}'s disk (and all its data) and "
                    f"build it again")
        if recreate and p.plan.of(Drift.RECREATE):
            problems += _recreate_refusals(p.name)
    if problems:
        raise LimaError("nothing was changed:\n  " + "\n  ".join(problems))


def _recreate_refusals(name: str) -> list[str]:
    """Why instance `name` cannot be deleted to be built again, found before anything
    stops: protected, not an instance directory, or holding files limactl did not make
    (a delete keeps those, and a directory left with them could not be created again)."""
    from lima.drivers import store

    inst = paths.instance_dir(name)
    try:
        store.require_deletable(inst)
    except LimaError as exc:
        return [f"{name}: {exc}"]
    out = []
    if store.is_protected(inst):
        out.append(f"{name}: instance {name!r} is protected; `limactl unprotect {name}` first")
    kept = store.unknown_entries(inst)
    if kept:
        out.append(f"{name}: {inst} holds entries limactl did not create: {', '.join(kept)};"
                   f" move them elsewhere before --recreate deletes the instance")
    return out


def _short(value: object) -> str:
    from lima.commands.diff import _short as short

    return short(value, 60)


def _apply_one(plan: InstancePlan, new: Resolved, restart_policy: str, timeout: float) -> str:
    """Carry out one instance's plan, then bring it to the run state its file asks for
    (x-limapy.runState, lima.states.runstate); the words for its final state."""
    from lima.states.runstate import suspend_refusal

    want = new.spec.run_state
    if want == "stopped" or (want == "suspended" and plan.now == "suspended"
                             and plan.verdict == "nothing"):
        return _apply_spec(plan, new, restart_policy, timeout, run_state=want)
    said = _apply_spec(plan, new, restart_policy, timeout, run_state="running")
    refusal = suspend_refusal(new.spec) if want == "suspended" else ""
    from lima.controller.planner import mark_run_state_refused
    from lima.controller.status_store import StatusStore

    mark_run_state_refused(StatusStore(), plan.name, refusal)
    if refusal:
        raise LimaError(f"{refusal} (x-limapy.runState: suspended); instance "
                        f"{plan.name!r} is left running")
    if want != "suspended":
        return said
    converge(plan.name, "suspended", spec=new.spec, generation=_stored_generation(plan.name)
             or new.generation, timeout=timeout, verb="apply")
    return "suspended"


def _apply_spec(plan: InstancePlan, new: Resolved, restart_policy: str, timeout: float,
                run_state: str) -> str:
    """Carry out one instance's plan, driving it to `run_state`; the word for its state."""
    from lima import schemas

    name = plan.name
    converge_ = functools.partial(converge, name, run_state)
    word = "" if run_state == "running" else run_state
    text = schemas.dump_yaml(new.document.data)
    verdict = plan.verdict
    if verdict in ("create", "nothing"):
        actions = converge_(spec=new.spec, generation=plan.generation,
                           document=text, timeout=timeout)
        return word or ("unchanged" if not actions else "running")
    if verdict == "recreate":
        _say(f"[{name}] RECREATING: the disk of instance {name!r} is deleted and built again "
             f"from its images; ALL DATA IN THE GUEST IS LOST")
        from lima.commands.instances import drive_absent

        drive_absent(name, timeout=timeout, verb="apply")
        converge_(spec=new.spec, generation=new.generation,
                 document=text, timeout=timeout)
        return f"recreated; {word or 'running'}"
    inst = paths.instance_dir(name)

    def record() -> None:
        # Under the instance lock, and only now that everything validated.
        from lima.fsutil import atomic_write

        atomic_write(inst / paths.LIMA_YAML, text)
        if verdict == "live":
            _record_live(name, new, text)

    stage = verdict == "restart" and restart_policy == "stage"
    converge_(spec=new.spec, generation=new.generation,
             document=text, timeout=timeout, before=record,
             restart=verdict == "restart" and not stage)
    if stage and plan.running:
        paths_changed = ", ".join(c.path for c in plan.plan.changes) if plan.plan else ""
        return (f"running; restart required to apply {paths_changed} (staged: applied at the "
                f"next start; `limactl stop {name}` then `limactl start {name}`)")
    if word:
        return f"{word} (changes applied)" if verdict == "live" else word
    if verdict == "live":
        return "running (changes applied)"
    return "running (restarted)" if plan.running else "running (started with the new spec)"


def _record_live(name: str, new: Resolved, text: str) -> None:
    """A change that needs no restart: the running boot now counts as built from `new`."""
    from dataclasses import replace

    from lima.controller.status_store import StatusStore
    from lima.drivers.applied import write_applied
    from lima.drivers.hostagent import reload_hostagent

    write_applied(paths.instance_dir(name), new.generation, new.filled, document=text)
    reload_hostagent(paths.instance_dir(name))  # portForwards follow without a restart
    store = StatusStore()
    status = store.load(name)
    if status is not None and status.generation:
        store.save(name, replace(status, generation=new.generation))


# How long `stop -f` and `delete -f` wait for the instance lock. A verb holds it for one
# pass, and no step runs longer than its budget (lima.states.policy.STEP_BUDGET), so a
# holder that keeps it longer is hung: the VM is then killed without the lock.
FORCE_LOCK_WAIT = 2 * STEP_BUDGET


def kill_vm(name: str) -> None:
    """SIGKILL the host agent and qemu of `name` at once (no clean shutdown), without the
    lock: only for a holder that kept the lock beyond any step's budget."""
    from lima.drivers.instance import QemuDriver
    from lima.states.actions import StopInstance
    from lima.states.model import DesiredState, RunState

    desired = DesiredState(spec=None, generation="", run_state=RunState.STOPPED, force=True)
    out = QemuDriver().execute(name, StopInstance(force=True), desired)
    if not out.ok:
        raise LimaError(f"could not kill instance {name!r}: {out.error}")


def stop_instance(
    name: str, *, force: bool, timeout: float = 300.0, driver: Driver | None = None,
    clock: Clock | None = None,
) -> None:
    """Drive `name` to stopped through the reconciler, under the lock (per pass). The
    request is recorded first, so an apply or start that holds the lock gives up before
    its next pass; this waits for its current step. With `force` the reconciler kills the
    VM (StopInstance(force=True)); a holder hung beyond FORCE_LOCK_WAIT does not keep a
    forced stop from killing it. `driver` and `clock` are for tests."""
    from lima.controller.lock import RequestNotRecorded, write_request

    try:
        req = write_request(name, "stopped", "limactl stop -f" if force else "limactl stop")
    except RequestNotRecorded as exc:  # a full disk must not keep a VM from stopping
        _say(f"[{name}] warning: {exc}; stopping anyway")
        req = exc.request
    try:
        converge(name, "stopped", spec=None, generation=_stored_generation(name) or "",
                 timeout=timeout, verb="stop", request=req, force=force, driver=driver,
                 clock=clock,
                 lock_timeout=min(timeout, FORCE_LOCK_WAIT) if force else timeout)
    except BusyError as exc:
        if not force:
            raise
        _say(f"[{name}] warning: {exc}; killing the VM without the lock")
        kill_vm(name)


def _refuse_managed(name: str) -> None:
    """A controller would start a stopped managed instance again at its next pass."""
    from lima.controller import managed

    managed.refuse_if_managed(
        name, undone_by="start it again",
        advice=f"run `limactl controller pause {name}` first (and `limactl controller resume"
        f" {name}` when done), or remove its file from the folder")


@click.command()
@click.argument("names", nargs=-1, metavar="[INSTANCE]...")
@click.option("--force", "-f", is_flag=True, help="Kill the VM at once (no clean shutdown).")
@click.option("--timeout", type=DURATION, default="5m", show_default=True,
              help="How long to wait (Go duration: 5m, 90s; a bare number is seconds).")
def stop(names: tuple[str, ...], force: bool, timeout: float) -> None:
    """Stop instances (default: "default")."""
    from lima.drivers import store

    # As Lima: each one in turn; one that cannot be stopped does not keep the others
    # running, and the errors are reported together at the end.
    errors: list[str] = []
    for name in names or ("default",):
        try:
            store.require_instance(name)
            _refuse_managed(name)
            stop_instance(name, force=force, timeout=timeout if timeout > 0 else 300.0)
        except LimaError as exc:
            if len(names) <= 1:
                raise
            errors.append(str(exc))
            continue
        click.echo(f"{name}: stopped")
    if errors:
        raise LimaError("\n".join(errors))



@click.command()
@click.argument("name", default="default")
@click.option("--timeout", type=DURATION, default="5m", show_default=True,
              help="How long to wait (Go duration: 5m, 90s; a bare number is seconds).")
def suspend(name: str, timeout: float) -> None:
    """Save a running instance's whole state to disk and stop it; start resumes it."""
    from lima.drivers import store

    inst = store.require_instance(name)
    _refuse_managed(name)
    status = store.inspect_processes(name, inst).status
    if status == store.STATUS_STOPPED:
        raise LimaError(f"instance {name!r} is not running; there is nothing to suspend")
    if status != store.STATUS_SUSPENDED:
        from lima.states.runstate import suspend_refusal

        spec = load_stored(name).spec
        refusal = suspend_refusal(spec)
        if refusal:
            raise LimaError(refusal)
        # The spec: a host agent killed meanwhile is replaced (attached) before the suspend.
        converge(name, "suspended", spec=spec,
                 generation=_stored_generation(name) or "", timeout=timeout, verb="suspend")
    if store.inspect_processes(name, inst).status != store.STATUS_SUSPENDED:
        # qemu went away before its state was saved (killed, or the guest powered off).
        raise LimaError(f"instance {name!r} stopped before its state was saved; "
                        f"`limactl start {name}` boots it afresh")
    click.echo(f"{name}: suspended")
