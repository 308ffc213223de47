"""The one chokepoint for subprocesses.

Every process limapy starts goes through `run()` (wait for it) or `spawn()` (leave it
running). A failure raises `CommandError` carrying the command, the exit code and the
tail of stderr, and the log gets a line that can be pasted into a shell. Under the test
suite (LIMAPY_CHECK_PROGRAMS=1) a program missing from lima.hostprograms is refused here,
as it would be missing on a fresh machine that scripts/bootstrap set up.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Re-exported: what the callers of spawn() need to talk to their child. They take it from
# here, so no other module imports subprocess (tests/unit/test_layering.py pins that).
from subprocess import DEVNULL as DEVNULL
from subprocess import PIPE as PIPE
from subprocess import Popen as Popen
from subprocess import TimeoutExpired as TimeoutExpired
from typing import IO, Any

from lima import hostprograms
from lima.errors import LimaError

log = logging.getLogger(__name__)


class CommandError(LimaError):
    """A command exited non-zero (or could not be started)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        msg = f"command failed (exit {returncode}): {shell_line(argv)}"
        if tail:
            msg += f"\n{tail}"
        super().__init__(msg)


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def shell_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as one line a user can paste into a shell."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    cmd = " ".join(shlex.quote(str(a)) for a in argv)
    return f"{prefix} {cmd}" if prefix else cmd


def _check_listed(args: Sequence[str]) -> None:
    # A CommandError like a missing program's, so callers handle it as they would on a
    # machine without it.
    try:
        hostprograms.check_program(args[0] if args else "")
    except hostprograms.UnlistedProgramError as exc:
        raise CommandError(args, 127, str(exc)) from exc


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    text: bool = True,
) -> Result:
    """Run a command to completion, capturing its output."""
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    log.debug("run: %s", shell_line(args, env))
    _check_listed(args)
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            text=text,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"{args[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, -1, f"timed out after {timeout} s") from exc
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        log.error("command failed (exit %d): %s", proc.returncode, shell_line(args, env))
        raise CommandError(args, proc.returncode, err)
    return Result(args, proc.returncode, out, err)


def spawn(
    argv: Sequence[str | Path],
    *,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    stdin: IO[Any] | int | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
    pass_fds: Sequence[int] = (),
    keep_sigpipe_ignored: bool = False,
    user_program: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a command and return at once; the caller owns the process.

    `keep_sigpipe_ignored`: the child inherits Python's ignored SIGPIPE, so a write to a
    reader that went away fails with EPIPE instead of killing it (a daemon that must
    outlive the process reading its output).

    `user_program`: a program the user chose and installed (a `limactl-NAME` plugin), not
    one limapy needs, so the host programs table does not apply to it."""
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    log.debug("spawn: %s", shell_line(args, env))
    if not user_program:
        _check_listed(args)
    try:
        return subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
            pass_fds=tuple(pass_fds),
            restore_signals=not keep_sigpipe_ignored,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"{args[0]}: not found") from exc
