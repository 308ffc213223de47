"""The error taxonomy every layer uses and `lima.cli` turns into messages and exit codes.

SpecError: the user must edit a file; never retried.
TemporaryError: worth retrying after `delay` seconds.
PermanentError: retrying will not help (digest mismatch, missing qemu, ...).
"""

from __future__ import annotations

from typing import NamedTuple


class LimaError(Exception):
    """Base of every expected failure; its message is shown to the user as is."""

    exit_code = 1


class Problem(NamedTuple):
    """One problem in one document: `FILE:LINE: field.path: message`. (A NamedTuple, not
    a dataclass: every limactl command imports this module, and `dataclasses` costs
    several milliseconds of start-up; it is immutable and ordered by its fields all the
    same; a changed copy is `problem._replace(file=...)`.)"""

    file: str
    line: int
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        prefix = "warning: " if self.warning else ""
        field = f"{self.path}: " if self.path else ""
        head = f"{where}: " if where else ""
        return f"{head}{prefix}{field}{self.message}"


class SpecError(LimaError):
    """The document is invalid; carries every problem found, sorted."""

    def __init__(self, problems: list[Problem] | Problem | str, file: str = "") -> None:
        if isinstance(problems, str):
            problems = [Problem(file, 0, "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = sorted(problems, key=_sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


def _sort_key(p: Problem) -> tuple[str, int, str, str]:
    return (p.file, p.line, p.path, p.message)


class TemporaryError(LimaError):
    """A failure that may go away: retry after `delay` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(LimaError):
    """A failure retrying cannot fix; the user has to act."""


class NotFoundError(LimaError):
    """A named thing (instance, template, disk) does not exist."""


class BusyError(LimaError):
    """Another process holds the instance lock."""
