"""`limactl clone OLDINST NEWINST` and `limactl rename OLDINST NEWINST`.

Reached through `lima.cli`. As in Lima (cmd/limactl/clone.go): the source must be stopped,
NEWINST must be a valid name no instance has, the edit flags (`--cpus`, `--set EXPR`, ...:
lima.editflags) edit the new lima.yaml,
`--start` starts the result (asked when the terminal is interactive and `--tty`, as Lima
asks). The copying and moving rules live in lima.drivers.instcopy; both verbs hold the
locks of both names, so nothing starts the source or creates the target meanwhile. Every
check (names, the edited lima.yaml) runs before anything is written: a refusal or a
failure leaves the source as it was and no target.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import click

from lima import paths
from lima.editflags import EditCommand, EditValues, edit_options
from lima.errors import LimaError, NotFoundError, SpecError
from lima.names import validate_name

log = logging.getLogger(__name__)

LOCK_WAIT = 60.0


def edit_document(text: str, exprs: Sequence[str], filename: str = paths.LIMA_YAML) -> str:
    """lima.yaml `text` with the yq expressions `exprs` applied in order (Lima joins them
    with `|`), dumped again; `text` itself when there are none."""
    if not exprs:
        return text
    from lima import schemas, yqeval
    from lima.schemas.yamlload import load_yaml

    data = load_yaml(text, filename).data
    for expr in exprs:
        data = yqeval.evaluate(expr, data)
    if not isinstance(data, dict):
        raise LimaError(f"{filename}: after the yq expressions the document is "
                        f"{type(data).__name__}, not a mapping")
    return schemas.dump_yaml(data)


def check_document(text: str, name: str, shown_as: str) -> None:
    """Validate `text` as instance `name`'s lima.yaml; SpecError naming `shown_as`."""
    from lima import schemas

    try:
        schemas.resolve("-", name=name, stdin=text.encode())
    except SpecError as exc:
        raise SpecError([p._replace(file=shown_as) if p.file == "-" else p
                         for p in exc.problems]) from None


@contextmanager
def both_locks(*names: str) -> Iterator[None]:
    """The instance locks of `names`, taken in sorted order (two crossed clones never
    wait for each other forever)."""
    from lima.controller.lock import instance_lock

    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(instance_lock(name, timeout=LOCK_WAIT))
        yield


def clone_or_rename(old: str, new: str, *, rename: bool, exprs: Sequence[str] = ()) -> None:
    """Lima's CloneOrRename plus the edit: refusals first, then the copy (or the move)."""
    from lima.drivers import instcopy, store

    verb = "rename" if rename else "clone"
    validate_name(old)
    validate_name(new)
    if old == new:
        raise LimaError(f"new instance name `{new}` must be different from `{old}`")
    src = paths.instance_dir(old)
    if not (src / paths.LIMA_YAML).is_file():
        raise NotFoundError(f"instance `{old}` not found")
    if rename:
        _refuse_managed(old, "would create it again under its old name; rename its file in"
                        " the folder instead, or `limactl clone` it")
    if paths.instance_dir(new).exists():
        raise LimaError(f"instance `{new}` already exists")
    _refuse_managed(new, f"would take the {verb} for its own; choose another name")
    text = (src / paths.LIMA_YAML).read_text()
    edited = edit_document(text, exprs, str(src / paths.LIMA_YAML)) if exprs else None
    # As Lima (its Inspect loads the source's lima.yaml): a damaged one is refused, and the
    # edited one is checked as the new instance's, before anything is written.
    check_document(edited if edited is not None else text, new,
                   f"{paths.instance_dir(new) / paths.LIMA_YAML} (after --set)"
                   if edited is not None else str(src / paths.LIMA_YAML))
    with both_locks(old, new):
        ins = store.inspect_processes(old, src)
        if ins.status == store.STATUS_RUNNING:
            raise LimaError(f"cannot {verb} a running instance")
        if ins.status != store.STATUS_STOPPED:
            raise LimaError(f"cannot {verb} instance `{old}`: it is {ins.status} "
                            f"({'; '.join(ins.errors)}); nothing was changed")
        try:
            copy = instcopy.rename_instance if rename else instcopy.clone_instance
            made = copy(src, new, edited)
        except OSError as exc:
            raise LimaError(f"cannot {verb} `{old}` to `{new}`: {exc}; nothing was made, "
                            f"`{old}` is as it was") from None
    log.info("%s `%s` to `%s` (%s)", "Renamed" if rename else "Cloned", old, new, made)


def _refuse_managed(name: str, consequence: str) -> None:
    """A folder controller owns `name`: a name moved or taken by hand would be fought."""
    from lima.controller import managed

    owner = managed.ownership(name)
    if owner is not None:
        raise LimaError(f"instance `{name}` is managed by {owner.managed_by} (from "
                        f"{owner.file}), which {consequence}")


def wants_start(start: bool | None) -> bool:
    """`--start`/`--start=false` as given; else, as Lima, ask when `--tty` holds and stdin
    is a terminal, and do not start otherwise."""
    if start is not None:
        return start
    root = click.get_current_context().find_root().obj or {}
    if not root.get("tty", sys.stdout.isatty()) or not sys.stdin.isatty():
        return False
    return click.confirm("Do you want to start the instance now?", default=True, err=True)


def _run(old: str, new: str, *, rename: bool, start: bool | None, exprs: Sequence[str]) -> None:
    clone_or_rename(old, new, rename=rename, exprs=exprs)
    if wants_start(start):
        from lima.commands.restart import start_existing

        start_existing(new)


def _flag_programs(edit_flags: EditValues) -> list[str]:
    """The edit flags' expressions (Lima's YQExpressions for an existing instance), as
    libjq evaluates them."""
    from lima.editflags import flag_expressions

    return [e.program for e in flag_expressions(edit_flags, new_instance=False)]


@click.command(cls=EditCommand, epilog="Not to be confused with 'limactl copy' ('limactl cp').")
@click.argument("old", metavar="OLDINST")
@click.argument("new", metavar="NEWINST")
@click.option("--start/--no-start", default=None, help="Start the instance after cloning")
@edit_options(create=False)
def clone(old: str, new: str, start: bool | None, edit_flags: EditValues) -> None:
    """Clone an instance of Lima"""
    _run(old, new, rename=False, start=start, exprs=_flag_programs(edit_flags))


@click.command(cls=EditCommand)
@click.argument("old", metavar="OLDINST")
@click.argument("new", metavar="NEWINST")
@click.option("--start/--no-start", default=None, help="Start the instance after renaming")
@edit_options(create=False)
def rename(old: str, new: str, start: bool | None, edit_flags: EditValues) -> None:
    """Rename an instance of Lima"""
    _run(old, new, rename=True, start=start, exprs=_flag_programs(edit_flags))
