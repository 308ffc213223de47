"""`limactl start` and what it shares with `create`: Lima's forms of the argument and
its edit flags.

The argument (Lima's start.go): none (instance `default`), NAME (an existing instance, or
a new one from template:default, a form Lima deprecates), FILE.yaml, `template:NAME`, an
http(s) URL (fetched here, by lima.drivers.images.download) or `-` (stdin, with --name).
Edit flags (lima.editflags) change the template before it is validated; on an existing
instance `start` applies them to its lima.yaml first, as Lima does. Reached through
lima.cli (`start`); lima.commands.instances (`create`) calls `choose_target` and
`resolve_new`.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import click

from lima import paths
from lima.editflags import EditCommand, EditValues, edit_options
from lima.errors import LimaError, SpecError
from lima.godur import DURATION

if TYPE_CHECKING:
    from lima.schemas import Resolved

log = logging.getLogger(__name__)

DEFAULT_INSTANCE = "default"
DEFAULT_TIMEOUT = 600.0  # Lima's DefaultWatchHostAgentEventsTimeout, 10m


class Target(NamedTuple):
    name: str
    locator: str | None  # None: the existing instance `name`


def tty_wanted() -> bool:
    """The global --tty (lima.cli stores it), else whether stdout is a terminal."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    value = obj.get("tty") if isinstance(obj, dict) else None
    return bool(value) if value is not None else sys.stdout.isatty()


def is_instance_name(arg: str) -> bool:
    """Lima's ValidateInstName: an identifier that does not end with .yaml or .yml."""
    from lima.names import is_valid_name

    return is_valid_name(arg) and not arg.lower().endswith((".yml", ".yaml"))


def _is_locator(arg: str, *, strict: bool) -> bool:
    """Whether `arg` names a template rather than an instance. Lima takes every
    non-identifier for a locator (`create` does too); `start` (`strict`) refuses one that
    cannot be read as one (no template:, URL, `-`, .yaml name or regular file) as an
    invalid instance name, as limapy's `start` always did."""
    from lima.schemas.templates import IMAGE_SUFFIX

    if not strict and not is_instance_name(arg):
        return True
    if arg == "-" or arg.startswith("template:") or re.match(r"^(https?|file)://", arg):
        return True
    if arg.lower().endswith((".yml", ".yaml")):
        return True
    # An image file (`debian.qcow2`) is a valid identifier too; limapy boots it when the
    # file is there (Lima would take the word as an instance name).
    if IMAGE_SUFFIX.search(arg.lower()) and Path(arg).is_file():
        return True
    return not is_instance_name(arg) and Path(arg).is_file()


def choose_target(arg: str | None, name: str | None, *, create_only: bool) -> Target:
    """Lima's loadOrCreateInstance up to reading the template: which instance, and from
    which locator when it is new. Raises LimaError with Lima's words."""
    from lima.commands.instances import instance_name
    from lima.names import validate_name

    if name is not None:
        validate_name(name)
    if arg == "":
        validate_name(arg)  # Lima reads an empty argument as none; limapy refuses it
    if arg == "-" and not name:
        raise LimaError("must pass instance name with --name when reading template from stdin")
    if arg is not None and arg != "" and _is_locator(arg, strict=not create_only):
        return Target(instance_name(name, arg), arg)
    if arg:
        if name is not None and name != arg:
            raise LimaError(f"instance name `{arg}` and CLI flag --name=`{name}` cannot be "
                            "specified together")
        inst = arg
    else:
        inst = name or DEFAULT_INSTANCE
    validate_name(inst)
    if (paths.instance_dir(inst) / paths.LIMA_YAML).is_file():
        if create_only:
            raise LimaError(f"instance `{inst}` already exists")
        log.info("Using the existing instance `%s`", inst)
        return Target(inst, None)
    if arg and arg != DEFAULT_INSTANCE:
        log.info("Creating an instance `%s` from template:default (Not from template:%s)",
                 inst, inst)
        log.warning("This form is deprecated. Use `limactl create --name=%s template:default` "
                    "instead", inst)
    return Target(inst, "template:default")


def read_locator(locator: str) -> tuple[bytes | None, bytes | None]:
    """(stdin, content) for `locator`: stdin's bytes for `-`, a URL's body fetched."""
    from lima.schemas.templates import read_stdin
    from lima.schemas.yamlload import MAX_BYTES

    if locator == "-":
        return read_stdin(), None
    if re.match(r"^https?://", locator):
        from lima.drivers.images.download import fetch_small

        return None, fetch_small(locator, MAX_BYTES)
    return None, None


def resolve_new(locator: str, name: str, edit_flags: EditValues, *, stdin: bytes | None = None,
                content: bytes | None = None) -> Resolved:
    """The template behind `locator`, changed by the edit flags, then validated and filled
    (a problem a flag caused names the flag)."""
    from lima import editflags, schemas
    from lima.schemas.templates import load_document

    document = load_document(locator, stdin=stdin, content=content)
    if not edit_flags:
        return schemas.resolve_document(document, name)
    params = document.data.get("param")
    exprs = editflags.flag_expressions(edit_flags, new_instance=True,
                                       params=params if isinstance(params, dict) else {})
    document, origins = editflags.apply_to_document(document, exprs)
    try:
        return schemas.resolve_document(document, name)
    except SpecError as exc:
        raise editflags.annotate(exc, origins) from None


@click.command(cls=EditCommand)
@click.argument("target", required=False)
@click.option("--name", default=None, help="Override the instance name")
@edit_options(create=True)
@click.option("--timeout", type=DURATION, default="10m", show_default=True,
              help="Duration to wait for the instance to be running before timing out (Go "
                   "duration: 10m, 1h30m; a bare number is seconds).")
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground while the instance runs (return when it stops; "
                   "SIGTERM stops it), as a service manager expects")
@click.option("--progress", is_flag=True,
              help="Show the guest's console (boot and provision scripts' output) while "
                   "waiting")
def start(target: str | None, name: str | None, timeout: float, foreground: bool,
          progress: bool, edit_flags: EditValues) -> None:
    """Start an instance of Lima

    TARGET: NAME (default: "default", created from template:default when missing),
    FILE.yaml, template:NAME, an http(s) URL, or - (stdin, with --name).
    """
    from lima.commands import startextras

    with startextras.foreground(foreground) as asked:
        inst_name = run_start(target, name, timeout, edit_flags, progress=progress)
        if foreground:
            startextras.stay_in_foreground(inst_name, asked)


def run_start(target: str | None, name: str | None, timeout: float,
              edit_flags: EditValues, *, progress: bool = False) -> str:
    """`limactl start`'s work (also `limactl edit --start`)."""
    from lima.commands.diff import plan_instance
    from lima.commands.lifecycle import converge, load_stored, show_message
    from lima.drivers import store

    chosen = choose_target(target, name, create_only=False)
    timeout = timeout if timeout > 0 else DEFAULT_TIMEOUT
    inst_name = chosen.name
    document: str | None = None
    if chosen.locator is not None:
        from lima import schemas

        stdin, content = read_locator(chosen.locator)
        resolved = resolve_new(chosen.locator, inst_name, edit_flags, stdin=stdin,
                               content=content)
        if paths.instance_dir(inst_name).exists():
            raise LimaError(f"instance {inst_name!r} already exists; run `limactl start "
                            f"{inst_name}`")
        for warning in resolved.warnings:
            click.echo(str(warning), err=True)
        document = schemas.dump_yaml(resolved.document.data)
        gen = resolved.generation
    else:
        store.require_instance(inst_name)
        if edit_flags:
            from lima.commands.edit import edit_instance_with_flags

            edit_instance_with_flags(inst_name, edit_flags)
        resolved = load_stored(inst_name)
        # A change staged by `apply --restart=stage` (or written by edit flags) boots here;
        # a running instance keeps running (RestartRequired says what waits).
        gen = plan_instance(inst_name, resolved).generation
    from lima.commands.startextras import progress as showing_progress

    with showing_progress(paths.instance_dir(inst_name), progress):
        actions = converge(inst_name, "running", spec=resolved.spec, generation=gen,
                           document=document, timeout=timeout, verb="start")
    if actions:
        show_message(inst_name)
    click.echo(f"{inst_name}: running")
    return inst_name
