"""Lifecycle verbs: apply, start, stop. Each builds a DesiredState and hands it to the
reconciler (lima.controller.reconcile) under the instance lock; none starts anything itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lima import paths
from lima.errors import LimaError, NotFoundError

if TYPE_CHECKING:
    from lima.controller.driver import Driver
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


def _stored_generation(name: str) -> str | None:
    """The generation the instance was last driven with (status.json), else the one of its
    stored lima.yaml (a created, never started instance)."""
    from lima.controller.status_store import StatusStore

    status = StatusStore().load(name)
    if status is not None and status.generation:
        return status.generation
    from lima import schemas
    from lima.errors import SpecError

    try:
        return schemas.generation(schemas.load_instance(name).filled)
    except (SpecError, NotFoundError, OSError):
        return None


def converge(
    name: str,
    run_state: str,
    *,
    spec: InstanceSpec | None,
    generation: str,
    documents: dict[str, str] | None = None,
    timeout: float = 600.0,
    wait_lock: bool = True,
) -> list[str]:
    """Drive instance `name` to `run_state`; print one line per phase; return the actions.

    Raises LimaError (with the reason and the last lines of the logs) when it stalls or
    times out.
    """
    from lima.controller.clock import SystemClock
    from lima.controller.lock import instance_lock
    from lima.controller.reconcile import WaitTimeout, reconcile_until
    from lima.controller.status_store import StatusStore
    from lima.drivers.instance import QemuDriver, failure_context
    from lima.states.model import DesiredState, RunState

    desired = DesiredState(spec=spec, generation=generation, run_state=RunState(run_state))
    driver = _Counting(QemuDriver(documents))
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

    with instance_lock(name, wait=wait_lock, timeout=timeout):
        try:
            status = reconcile_until(
                name, desired, driver, StatusStore(), SystemClock(),
                timeout=timeout, on_phase=on_phase,
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


def _resolve_target(target: str) -> tuple[str, bool]:
    """NAME or FILE -> (name, is_file)."""
    p = Path(target)
    if target == "-" or target.startswith("template:") or target.endswith((".yaml", ".yml")) \
            or (p.is_file() and "/" in target):
        from lima import schemas

        return schemas.name_from_locator(target), True
    return target, False


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--name", default=None, help="Instance name (only with a single FILE).")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the instance to be running.")
def apply(files: tuple[str, ...], name: str | None, timeout: float) -> None:
    """Create each instance when missing, then drive it to Running."""
    from lima import schemas
    from lima.drivers import store

    if name and len(files) > 1:
        raise LimaError("--name can only be used with a single file")
    stdin = sys.stdin.buffer.read() if "-" in files else None
    for locator in files:
        inst_name = name or schemas.name_from_locator(locator)
        store.validate_name(inst_name)
        resolved = schemas.resolve(locator, name=inst_name, stdin=stdin)
        gen = schemas.generation(resolved.filled)
        exists = (paths.instance_dir(inst_name) / paths.LIMA_YAML).is_file()
        for w in () if exists else resolved.warnings:
            _say(str(w))
        if exists:
            stored = _stored_generation(inst_name)
            # An unreadable stored spec counts as changed: booting the new one would leave
            # lima.yaml and the VM disagreeing.
            if stored != gen:
                click.echo(f"{inst_name}: changed; restart needed")
                continue
        text = schemas.dump_yaml(resolved.document.data)
        actions = converge(inst_name, "running", spec=resolved.spec, generation=gen,
                           documents={inst_name: text}, timeout=timeout)
        click.echo(f"{inst_name}: {'unchanged' if not actions else 'running'}")


@click.command()
@click.argument("target", default="default")
@click.option("--name", default=None, help="Instance name when TARGET is a file.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the instance to be running.")
@click.option("--tty/--no-tty", default=False, hidden=True, help="Accepted for Lima compat.")
def start(target: str, name: str | None, timeout: float, tty: bool) -> None:
    """Start an instance (NAME), or create and start one from FILE / template:NAME."""
    from lima import schemas
    from lima.drivers import store

    inst_name, is_file = _resolve_target(target)
    inst_name = name or inst_name
    documents: dict[str, str] = {}
    if is_file:
        if paths.instance_dir(inst_name).exists():
            raise LimaError(f"instance {inst_name!r} already exists; run `limactl start "
                            f"{inst_name}`")
        stdin = sys.stdin.buffer.read() if target == "-" else None
        resolved = schemas.resolve(target, name=inst_name, stdin=stdin)
        documents[inst_name] = schemas.dump_yaml(resolved.document.data)
    else:
        store.require_instance(inst_name)
        resolved = schemas.load_instance(inst_name)
    gen = schemas.generation(resolved.filled)
    converge(inst_name, "running", spec=resolved.spec, generation=gen, documents=documents,
             timeout=timeout)
    click.echo(f"{inst_name}: running")


def stop_instance(name: str, *, force: bool, timeout: float = 300.0) -> None:
    """Drive `name` to stopped (force: kill at once, then record the stopped status)."""
    if force:
        from lima.drivers.instance import QemuDriver
        from lima.states.actions import StopInstance
        from lima.states.model import DesiredState, RunState

        desired = DesiredState(spec=None, generation="", run_state=RunState.STOPPED)
        QemuDriver().execute(name, StopInstance(force=True), desired)
    converge(name, "stopped", spec=None, generation=_stored_generation(name) or "",
             timeout=timeout)


@click.command()
@click.argument("name", default="default")
@click.option("--force", "-f", is_flag=True, help="Kill the VM at once (no clean shutdown).")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def stop(name: str, force: bool, timeout: float) -> None:
    """Stop an instance."""
    from lima.drivers import store

    store.require_instance(name)
    stop_instance(name, force=force, timeout=timeout)
    click.echo(f"{name}: stopped")
