"""Which host environment variables `limactl shell --preserve-env` passes to the guest.

Pure functions, called by lima.commands.shell. The rules are Lima's: a built-in block list
(`DEFAULT_BLOCK_LIST`), replaced by `LIMA_SHELLENV_BLOCK` (a comma-separated list of
patterns; a leading `+` adds to the built-in list instead), and `LIMA_SHELLENV_ALLOW`,
whose patterns pass even when blocked. A pattern is a variable name in which `*` matches
any run of characters; anything but letters, digits, `_` and `*` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from lima.errors import LimaError

# Lima 2.2's built-in block list (`limactl info` shows it as shellEnvBlock).
DEFAULT_BLOCK_LIST: tuple[str, ...] = (
    "BASH*", "DISPLAY", "DYLD_*", "EUID", "FPATH", "GID", "GROUP", "HOME", "HOSTNAME",
    "LD_*", "LOGNAME", "OLDPWD", "PATH", "PWD", "SHELL", "SHLVL", "SSH_*", "TERM",
    "TERMINFO", "TMPDIR", "UID", "USER", "XAUTHORITY", "XDG_*", "ZDOTDIR", "ZSH*", "_*",
)

BLOCK_VAR = "LIMA_SHELLENV_BLOCK"
ALLOW_VAR = "LIMA_SHELLENV_ALLOW"

_INVALID = re.compile(r"[^A-Za-z0-9_*]")


class PatternError(LimaError):
    """A pattern in LIMA_SHELLENV_BLOCK or LIMA_SHELLENV_ALLOW has a character not allowed."""


def parse_list(value: str) -> list[str]:
    """The non-empty, stripped entries of a comma-separated list."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _checked(patterns: list[str], var: str) -> list[str]:
    for pattern in patterns:
        bad = _INVALID.search(pattern)
        if bad:
            raise PatternError(
                f"Invalid {var} pattern: pattern `{pattern}` contains invalid character "
                f"`{bad.group()}` at position {bad.start()}"
            )
    return patterns


def block_list(environ: Mapping[str, str]) -> list[str]:
    """The block patterns in force: the built-in list unless LIMA_SHELLENV_BLOCK says."""
    value = environ.get(BLOCK_VAR, "")
    if not value:
        return list(DEFAULT_BLOCK_LIST)
    extend = value.startswith("+")
    patterns = _checked(parse_list(value[1:] if extend else value), BLOCK_VAR)
    return [*DEFAULT_BLOCK_LIST, *patterns] if extend else patterns


def allow_list(environ: Mapping[str, str]) -> list[str]:
    """The patterns of LIMA_SHELLENV_ALLOW (none when unset)."""
    return _checked(parse_list(environ.get(ALLOW_VAR, "")), ALLOW_VAR)


def matches(name: str, pattern: str) -> bool:
    """Whether variable `name` matches `pattern` (`*`: any run of characters, even none)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name) is not None


def filter_environment(
    environ: Iterable[tuple[str, str]], allow: Sequence[str], block: Sequence[str]
) -> list[str]:
    """`NAME=value` for each variable, in order, that is allowed or not blocked."""
    kept = []
    for name, value in environ:
        allowed = any(matches(name, p) for p in allow)
        if allowed or not any(matches(name, p) for p in block):
            kept.append(f"{name}={value}")
    return kept


def preserved(environ: Mapping[str, str]) -> list[str]:
    """What `--preserve-env` passes, under the rules `environ` itself sets."""
    return filter_environment(environ.items(), allow_list(environ), block_list(environ))
