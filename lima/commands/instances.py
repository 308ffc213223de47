"""Instance verbs: create, delete, protect, unprotect (`list` is lima.commands.listing).

Reached through `lima.cli`. Every NAME a user gives (or a file name implies) goes through
`lima.names` before anything is read or written, so no verb reaches outside
`$LIMA_HOME/NAME`. `delete` records its request (see lima.controller.lock), then drives the
instance to absent through the reconciler like every verb; its DeleteInstance removes only
what an instance directory is known to hold (`lima.drivers.store.delete_instance_dir`).
As in Lima, a name with no directory is a warning (exit 0, with or without --force), and a
directory without lima.yaml is refused and left alone (it may hold a disk).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lima import paths
from lima.drivers import store
from lima.editflags import EditCommand, EditValues, edit_options
from lima.errors import LimaError, SpecError
from lima.names import validate_name

if TYPE_CHECKING:
    from lima.controller.driver import Driver
    from lima.states.actions import Action, Outcome
    from lima.states.model import DesiredState, ObservedState

log = logging.getLogger(__name__)

# How long a delete waits for the instance lock (a converging apply gives up before its
# next pass once the delete's request is recorded), and for the whole delete.
DELETE_LOCK_WAIT = 120.0
DELETE_TIMEOUT = 300.0


def instance_name(name: str | None, locator: str) -> str:
    """`--name` when given (even empty: that is an error, not "use the default"), else the
    name the locator implies; checked either way."""
    if name is not None:
        validate_name(name)
        return name
    from lima import schemas

    derived = schemas.name_from_locator(locator)
    try:
        validate_name(derived)
    except SpecError as exc:
        raise SpecError(f"{exc} (the name comes from {locator!r}; pass --name NAME)") from None
    return derived


def _disk_preparer(spec: Any) -> Any:
    """The disk preparation step of `create` (basedisk, diffdisk, kernel, initrd)."""
    from lima.drivers.images import prepare_disks

    def prepare(tmp: Path) -> None:
        prepare_disks(spec, tmp)

    return prepare


def create_from_locator(
    locator: str, name: str | None, stdin: bytes | None, driver: Driver | None = None,
    *, edit_flags: EditValues | None = None, content: bytes | None = None,
) -> Path:
    """Resolve and validate (after the edit flags), then drive the new instance to stopped
    through the reconciler (CreateInstance writes the directory atomically, with its
    disks). A failed create leaves nothing and is not retried: its error is the verb's.
    `driver` is for tests."""
    from lima import schemas
    from lima.commands.lifecycle import converge
    from lima.commands.startform import resolve_new
    from lima.controller.lock import Request, write_request
    from lima.drivers.instance import QemuDriver

    name = instance_name(name, locator)
    if paths.instance_dir(name).exists():
        raise LimaError(f"instance {name!r} already exists ({paths.instance_dir(name)})")
    resolved = resolve_new(locator, name, edit_flags or EditValues(), stdin=stdin,
                           content=content)
    for warning in resolved.warnings:
        click.echo(str(warning), err=True)
    text = schemas.dump_yaml(resolved.document.data)
    inst = paths.instance_dir(name)

    def recheck() -> None:
        # Under the lock: another create may have made it while this one resolved.
        if inst.exists():
            raise LimaError(f"instance {name!r} already exists ({inst})")
        # Under the lock, so a create never interrupts an apply of the same name that
        # holds it: it only records what was asked last.
        write_request(name, "stopped", "limactl create")

    req = Request("stopped", os.getpid(), "limactl create", time.time())  # written above
    try:
        converge(name, "stopped", spec=resolved.spec, generation=resolved.generation,
                 verb="create", request=req, before=recheck, wait_lock=False, document=text,
                 driver=_OneShot(driver or QemuDriver()))
    except _Ended as exc:
        raise exc.error from None
    return inst


@click.command(cls=EditCommand)
@click.argument("target", required=False)
@click.option("--name", default=None, help="Override the instance name")
@edit_options(create=True)
def create(target: str | None, name: str | None, edit_flags: EditValues) -> None:
    """Create an instance of Lima

    TARGET: FILE.yaml, template:NAME, an http(s) URL, - (stdin, with --name), or none
    (template:default, instance "default").
    """
    from lima.commands.startform import choose_target, read_locator

    chosen = choose_target(target, name, create_only=True)
    assert chosen.locator is not None  # create_only: an existing instance is an error
    stdin, content = read_locator(chosen.locator)
    inst = create_from_locator(chosen.locator, chosen.name, stdin, edit_flags=edit_flags,
                               content=content)
    click.echo(f"Created instance {inst.name!r} in {inst}")
    click.echo(f"Run `limactl start {inst.name}` to start the instance.", err=True)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Stop the instance first if it is running.")
def delete(names: tuple[str, ...], force: bool) -> None:
    """Delete instances (what limactl put in their directory; other files are kept)."""
    for name in names:
        validate_name(name)
    refused: list[str] = []
    for name in names:
        # As Lima: a missing instance is a warning, a directory without lima.yaml is an
        # error once the other names are done; any other failure ends the verb at once.
        inst_dir = paths.instance_dir(name)
        if not os.path.lexists(inst_dir):
            log.warning("Ignoring non-existent instance `%s`", name)
            continue
        if inst_dir.is_dir() and not inst_dir.is_symlink() \
                and not (inst_dir / paths.LIMA_YAML).is_file():
            refused.append(
                f"instance `{name}` directory `{inst_dir}` exists but has no lima.yaml (or it"
                f" could not be read), so it may hold a user's disk, or a clone in progress;"
                f" nothing was deleted. If no `limactl` operation is using it, look inside"
                f" and remove it yourself")
            continue
        try:
            _delete_one(name, force)
        except LimaError as exc:
            if not refused:
                raise
            refused.append(str(exc))
            break  # as Lima: a failed delete ends the verb
    if len(refused) == 1:
        raise LimaError(refused[0])
    if refused:  # one line each, prefixed as `lima.cli` prefixes a single one
        raise LimaError("\n".join(f"limactl: {m}" for m in refused))


def _running_pids(inst_dir: Path) -> str:
    """"host agent PID N, qemu PID M" for what of the instance runs, "" when nothing does."""
    ins = store.inspect_processes(inst_dir.name, inst_dir)
    parts = [f"host agent PID {ins.hostagent_pid}"] if ins.hostagent_pid else []
    parts += [f"qemu PID {ins.driver_pid}"] if ins.driver_pid else []
    return ", ".join(parts)


def _refuse_managed(name: str) -> None:
    """A controller would create a deleted managed instance again (with an empty disk)."""
    from lima.controller import managed

    managed.refuse_if_managed(
        name, undone_by="create it again",
        advice=f"run `limactl controller pause {name}` first, or remove its file from the"
        " folder (the controller prunes it by its --prune policy)")


class _Ended(Exception):
    """A create or delete that failed, carried out of the reconciler as it is: these
    one-shot verbs do not retry (as before), and a Stalled status would be written into
    a directory kept for the user."""

    def __init__(self, error: LimaError) -> None:
        super().__init__(str(error))
        self.error = error


class _OneShot:
    """`create`'s and `delete`'s driver: `inner` for every step, except that a failed
    CreateInstance, or the safe delete's refusal (entries limactl did not make, not an
    instance directory), ends the verb at once with its own message."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner

    def observe(self, name: str) -> ObservedState:
        return self.inner.observe(name)

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        from lima.states.actions import CreateInstance, DeleteInstance, Outcome

        if isinstance(action, CreateInstance):
            out = self.inner.execute(name, action, desired)
            if not out.ok:
                raise _Ended(LimaError(out.error or "the instance could not be created"))
            return out
        if not isinstance(action, DeleteInstance):
            return self.inner.execute(name, action, desired)
        try:
            from lima.drivers.postboot import remove_copies_inside

            remove_copies_inside(paths.instance_dir(name))  # copyToHost files are ours
            store.delete_instance_dir(paths.instance_dir(name))
        except LimaError as exc:
            raise _Ended(exc) from None
        except OSError as exc:
            raise _Ended(LimaError(f"instance {name!r} could not be deleted: {exc}")) from None
        from lima.controller import managed

        managed.remove_logs(name)  # a controller's decision lines go with the instance
        return Outcome.success()


def _delete_one(name: str, force: bool, driver: Driver | None = None) -> None:
    """Refuse what must not be deleted, then drive the instance to absent through the
    reconciler under the lock (per pass): StopInstance(force=True) when running (-f),
    then DeleteInstance (the safe delete). `driver` is for tests."""
    from lima.commands.lifecycle import FORCE_LOCK_WAIT
    from lima.controller.lock import write_request

    inst_dir = store.require_instance(name)
    _refuse_managed(name)
    store.require_deletable(inst_dir)
    if store.is_protected(inst_dir):
        raise LimaError(f"instance {name!r} is protected (run `limactl unprotect {name}` first)")
    if _running_pids(inst_dir) and not force:
        raise LimaError(f"instance {name!r} is running; stop it first or use `limactl delete -f`")
    # Recorded before the lock is awaited: an apply holding it gives up at its next pass.
    req = write_request(name, "absent", "limactl delete -f" if force else "limactl delete")

    def recheck() -> None:
        # Under the lock, before the first pass: what may have changed while we waited.
        inst = store.require_instance(name)
        if store.is_protected(inst):
            raise LimaError(f"instance {name!r} was protected meanwhile; not deleted")
        running = _running_pids(inst)
        if running and not force:
            raise LimaError(f"instance {name!r} is still running ({running}): it was started"
                            " meanwhile; nothing was deleted")

    drive_absent(name, timeout=DELETE_TIMEOUT, verb="delete", request=req, before=recheck,
                 lock_timeout=FORCE_LOCK_WAIT if force else DELETE_LOCK_WAIT, driver=driver)
    click.echo(f"Deleted {name!r} ({inst_dir})")


def drive_absent(name: str, *, timeout: float, verb: str, driver: Driver | None = None,
                 **kwargs: Any) -> None:
    """`lifecycle.converge(name, "absent")` with the one-shot driver: the safe delete's
    refusal (entries limactl did not make) ends the verb at once with its own message,
    never retried until the timeout. `kwargs` go to converge (request, before, ...)."""
    from lima.commands.lifecycle import converge
    from lima.drivers.instance import QemuDriver

    try:
        converge(name, "absent", spec=None, generation="", timeout=timeout, verb=verb,
                 driver=_OneShot(driver or QemuDriver()), **kwargs)
    except _Ended as exc:
        raise exc.error from None


def _set_protected(names: tuple[str, ...], protected: bool) -> None:
    for name in names:
        validate_name(name)
    for name in names:
        inst_dir = store.require_instance(name)
        marker = inst_dir / paths.PROTECTED
        if protected:
            marker.touch()
            click.echo(f"Protected {name!r}")
        else:
            marker.unlink(missing_ok=True)
            click.echo(f"Unprotected {name!r}")


@click.command()
@click.argument("names", nargs=-1, required=True)
def protect(names: tuple[str, ...]) -> None:
    """Protect instances from deletion."""
    _set_protected(names, True)


@click.command()
@click.argument("names", nargs=-1, required=True)
def unprotect(names: tuple[str, ...]) -> None:
    """Allow deleting instances again."""
    _set_protected(names, False)
