"""`limactl edit [NAME|FILE.yaml]`: change an instance's lima.yaml (or a template file)
with Lima's edit flags, or in $EDITOR when there are none and a terminal is there.

The new text is validated before anything is written: an invalid edit leaves the file as
it was, saves the text as ./lima.REJECTED.yaml (as Lima does) and exits 1 with its
problems at lima.REJECTED.yaml:LINE. A stopped instance just gets the new lima.yaml
(`--start` starts it). Unlike Lima, which refuses to edit a running instance, limapy plans
the change as `limactl apply` does (lima.commands.diff): a live change applies at once, a
restart-class one restarts the guest with `--start` (or a yes at the terminal's prompt)
and otherwise waits for the next start; a change that needs a new disk is refused.
Reached through lima.cli; `limactl start NAME --cpus 2` calls `edit_instance_with_flags`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lima import paths
from lima.editflags import EditCommand, EditValues, edit_options
from lima.errors import LimaError, Problem, SpecError

if TYPE_CHECKING:
    from lima.schemas import Resolved

log = logging.getLogger(__name__)

REJECTED = "lima.REJECTED.yaml"
EDITORS = ("editor", "vim", "vi", "emacs")  # after $VISUAL and $EDITOR, as Lima looks


def detect_editor() -> str | None:
    """Lima's editor lookup: $VISUAL, $EDITOR, editor, vim, vi, emacs; the first found on
    PATH (a value with arguments, `code --wait`, is one program name, as in Lima)."""
    for candidate in (os.environ.get("VISUAL", ""), os.environ.get("EDITOR", ""), *EDITORS):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def _file_warning(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return ""
    if not text:
        return ""
    lines = [f"# WARNING: {path} includes the following settings,",
             "# which are applied before applying this YAML:", "# -----------"]
    lines += ["#" + (" " + line if line else "") for line in text.rstrip("\n").split("\n")]
    return "\n".join([*lines, "# -----------", "", ""])


def editor_header(what: str) -> str:
    config = paths.lima_home() / "_config"
    return (f"# Please edit the following configuration {what}\n"
            "# and an empty file will abort the edit.\n\n"
            + _file_warning(config / "default.yaml") + _file_warning(config / "override.yaml"))


def open_editor(content: bytes, header: str) -> bytes | None:
    """Lima's OpenEditor: the text after the user's editor ran on a temp copy (header
    first); None when it was saved empty."""
    from lima.drivers import runner

    editor = detect_editor()
    if editor is None:
        raise LimaError("could not detect a text editor binary, try setting $EDITOR")
    fd, tmp = tempfile.mkstemp(prefix="lima-editor-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header.encode() + content)
        proc = runner.spawn([editor, tmp], stdin=None, stdout=None, stderr=None)
        code = proc.wait()
        if code != 0:
            raise LimaError(f"could not execute editor `{editor}` for a file `{tmp}`: exit "
                            f"status {code}")
        text = Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)
    body = text[len(header.encode()):] if text.startswith(header.encode()) else text
    return body if body.strip() else None


def _flag_text(old: bytes, file: Path, edit_flags: EditValues
               ) -> tuple[bytes, dict[tuple[str | int, ...], str]]:
    """The file's text with the flags' expressions applied (an empty bytes: none)."""
    from lima import editflags, schemas
    from lima.schemas.yamlload import load_yaml

    data: Any = load_yaml(old, str(file)).data if edit_flags.changed("param") else None
    params = data.get("param") if isinstance(data, dict) else None
    exprs = editflags.flag_expressions(edit_flags, new_instance=False,
                                       params=params if isinstance(params, dict) else {})
    if not exprs:
        return b"", {}
    loaded = load_yaml(old, str(file)).data
    new, origins = editflags.apply_expressions(exprs, loaded if isinstance(loaded, dict) else {})
    return schemas.dump_yaml(new).encode(), origins


def validate_new(file: Path, text: bytes, name: str | None,
                 origins: dict[tuple[str | int, ...], str]) -> Resolved:
    """Resolve the new text as `file`; invalid: save it as ./lima.REJECTED.yaml and raise
    with its problems pointing there."""
    from lima import editflags, schemas

    try:
        return schemas.resolve(str(file), name=name, content=text)
    except SpecError as exc:
        err = editflags.annotate(exc, origins)
        problems = [Problem(REJECTED if p.file == str(file) else p.file, p.line, p.path,
                            p.message, p.warning) for p in err.problems]
        try:
            Path(REJECTED).write_bytes(text)
        except OSError as write_err:
            raise LimaError(f"the YAML is invalid, attempted to save the buffer as "
                            f"`{REJECTED}` but failed: {write_err}\n{SpecError(problems)}"
                            ) from None
        raise LimaError(f"the YAML is invalid, saved the buffer as `{REJECTED}`:\n"
                        f"{SpecError(problems)}") from None


def edit_instance_with_flags(name: str, edit_flags: EditValues) -> None:
    """`start NAME --cpus 2`: Lima's applyYQExpressionToExistingInstance (validated, then
    written; what it changes applies when the instance boots next)."""
    file = paths.instance_dir(name) / paths.LIMA_YAML
    old = file.read_bytes()
    new, origins = _flag_text(old, file, edit_flags)
    if not new or new == old:
        return
    validate_new(file, new, name, origins)
    _write_stored(name, new)


def stage_flags_for_restart(name: str, edit_flags: EditValues) -> None:
    """`restart NAME --cpus 2`: the flags' edit validated and planned as `apply` plans it
    (a change that needs a new disk is refused, nothing written), then written; the
    restart that follows boots with it."""
    from lima.commands.diff import plan_instance
    from lima.commands.lifecycle import _refuse

    file = paths.instance_dir(name) / paths.LIMA_YAML
    old = file.read_bytes()
    new, origins = _flag_text(old, file, edit_flags)
    if not new or new == old:
        return
    resolved = validate_new(file, new, name, origins)
    _refuse([plan_instance(name, resolved)], recreate=False)
    _write_stored(name, new)


def _write_stored(name: str, text: bytes) -> None:
    from lima.controller.lock import instance_lock
    from lima.fsutil import atomic_write

    with instance_lock(name, wait=True, timeout=120.0):
        atomic_write(paths.instance_dir(name) / paths.LIMA_YAML, text)


def _ask(question: str) -> bool:
    """Lima asks only when stdin is a terminal; otherwise the answer is no."""
    if not sys.stdin.isatty():
        return False
    return click.confirm(question.rstrip(), default=True, err=True)


@click.command(cls=EditCommand)
@click.argument("target", required=False)
@click.option("--start", "start_after", is_flag=True, default=False,
              help="Start the instance after editing (a running one: restart it when the "
                   "change needs a restart)")
@edit_options(create=False)
def edit(target: str | None, start_after: bool, edit_flags: EditValues) -> None:
    """Edit an instance of Lima or a template

    TARGET: an instance NAME (default: "default") or a FILE.yaml, edited in place.
    """
    from lima.commands.startform import is_instance_name, tty_wanted

    arg = target or "default"
    name: str | None = None
    if is_instance_name(arg):
        name = arg
        if not (paths.instance_dir(name) / paths.LIMA_YAML).is_file():
            raise LimaError(f"instance `{arg}` not found")
        file = paths.instance_dir(name) / paths.LIMA_YAML
    else:
        file = Path(arg).absolute()
    try:
        old = file.read_bytes()
    except OSError as exc:
        raise LimaError(f"{arg}: {exc.strerror}") from None
    tty = tty_wanted()
    new, origins = _flag_text(old, file, edit_flags)
    if not new and not edit_flags and tty:
        what = f"for Lima instance `{name}`" if name else f"`{file}`"
        new = open_editor(old, editor_header(what)) or b""
    if not new.strip():
        log.info("Aborting, as requested by saving the file with empty content")
        return
    if new == old:
        log.info("Aborting, no changes made to the instance")
        return
    resolved = validate_new(file, new, name, origins)
    if name is None:
        from lima.fsutil import atomic_write

        atomic_write(file, new)
        return
    asked = click.get_current_context().get_parameter_source("start_after")
    prompt = tty and asked != click.core.ParameterSource.COMMANDLINE
    _edit_instance(name, new, resolved, start_after, prompt)


def _edit_instance(name: str, text: bytes, resolved: Resolved, start_after: bool,
                   prompt: bool) -> None:
    from lima.commands.diff import plan_instance
    from lima.commands.lifecycle import _apply_one, _refuse

    plan = plan_instance(name, resolved)
    if not plan.running:
        _write_stored(name, text)
        click.echo(f"Instance `{name}` configuration edited", err=True)
        if start_after or (prompt and _ask("Do you want to start the instance now? ")):
            from lima.commands.startform import DEFAULT_TIMEOUT, run_start

            run_start(name, None, DEFAULT_TIMEOUT, EditValues())
        return
    _refuse([plan], recreate=False)
    verdict = plan.verdict
    if verdict == "restart" and not start_after and prompt:
        start_after = _ask("Do you want to restart the instance now? ")
    policy = "auto" if start_after else "stage"
    if verdict == "nothing":
        _write_stored(name, text)
        click.echo(f"{name}: configuration edited; nothing to apply", err=True)
        return
    outcome = _apply_one(plan, resolved, policy, 600.0)
    click.echo(f"Instance `{name}` configuration edited", err=True)
    if verdict == "restart" and not start_after:
        fields = ", ".join(c.path for c in plan.plan.changes) if plan.plan else ""
        click.echo(f"{name}: running; {fields} change(s) at the next start (`limactl stop "
                   f"{name}` then `limactl start {name}`, or `limactl edit --start {name}`)")
        return
    click.echo(f"{name}: {outcome}")
