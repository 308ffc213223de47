"""Lima's global flags: `--debug`, `--log-level`, `--log-format`, `--tty`, `-y/--yes`.

Lima declares them on its root command as persistent cobra flags, so they are accepted
before or after the verb (`limactl list --debug`, `limactl --tty=false start`); click
only reads a group's options before the verb. `split_global_flags` takes them out of the
whole command line (up to `--`; after the verb of a passthrough verb such as `shell` they
stay with that verb) and `GlobalFlags.check` applies Lima's rules. Called by lima.cli (the
root group's parse_args). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from lima.errors import LimaError

# strconv.ParseBool's words: what cobra accepts in `--tty=VALUE`.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
BOOL_FLAGS = ("debug", "tty", "yes")
STRING_FLAGS = ("log-level", "log-format")
SHORTHANDS = {"-y": "yes"}
# logrus.ParseLevel's words (lower-cased first, as logrus does).
LOG_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
# Lima warns when these verbs get --yes (cmd/limactl/main.go).
YES_DEPRECATED_VERBS = ("clone", "edit", "rename")


class GlobalFlagError(LimaError):
    """A global flag is wrong; Lima's words, exit status 1."""


@dataclass
class GlobalFlags:
    """The global flags given (None: not given, as cobra's `Changed`)."""

    debug: bool = False
    log_level: str = ""
    log_format: str = "text"
    tty: bool | None = None
    yes: bool | None = None
    given: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Lima's PersistentPreRunE: the log level and format, then --tty with --yes."""
        if self.log_level and self.log_level.lower() not in LOG_LEVELS:
            raise GlobalFlagError(f'not a valid logrus Level: "{self.log_level}"')
        if self.log_format not in LOG_FORMATS:
            raise GlobalFlagError(f"unsupported log-format: `{self.log_format}`")
        if self.tty is not None and self.yes is not None:
            raise GlobalFlagError("cannot use both --tty and --yes flags at the same time")

    def level(self) -> str:
        """The effective level: --log-level wins over --debug (as in Lima)."""
        if self.log_level:
            return {"warning": "warn"}.get(self.log_level.lower(), self.log_level.lower())
        return "debug" if self.debug else "info"

    def resolved_tty(self, stdout_is_terminal: bool) -> bool:
        """--tty's value: as given, else false with --yes, else whether stdout is a terminal."""
        if self.tty is not None:
            return self.tty
        if self.yes:
            return False
        return stdout_is_terminal


def parse_bool(flag: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise GlobalFlagError(f'invalid argument "{value}" for "--{flag}" flag: '
                          f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _take(arg: str, rest: list[str], flags: GlobalFlags) -> int | None:
    """Record `arg` when it is a global flag: how many extra arguments it used (its value),
    or None when it is not one."""
    name, eq, value = arg.partition("=")
    name = SHORTHANDS.get(name, name.removeprefix("--") if name.startswith("--") else "")
    if name in BOOL_FLAGS:
        setattr(flags, name, parse_bool(name, value) if eq else True)
        flags.given.append(name)
        return 0
    if name in STRING_FLAGS:
        used = 0
        if not eq:
            if not rest:
                raise GlobalFlagError(f"flag needs an argument: --{name}")
            value, used = rest[0], 1
        setattr(flags, name.replace("-", "_"), value)
        flags.given.append(name)
        return used
    return None


def split_global_flags(
    args: list[str],
    passthrough: Collection[str] | Callable[[str], bool] = (),
    value_options: Callable[[str], Collection[str]] = lambda verb: (),
) -> tuple[GlobalFlags, list[str]]:
    """(the global flags, the other arguments in their order). `passthrough`: the verbs
    whose arguments are all theirs (names, or a test). `value_options(verb)`: the
    verb's options that take a separate value (`--format json`), whose value is never read
    as a flag, as pflag reads it."""
    is_passthrough = passthrough if callable(passthrough) else passthrough.__contains__
    flags = GlobalFlags()
    out: list[str] = []
    verb: str | None = None
    takes_value: Collection[str] = ()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if verb is not None and is_passthrough(verb):
            out.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            if verb is None:
                verb = arg
                takes_value = value_options(arg)
            out.append(arg)
            i += 1
            continue
        used = _take(arg, args[i + 1:], flags)
        if used is None:
            out.append(arg)
            if arg in takes_value and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
            i += 1
            continue
        i += 1 + used
    return flags, out
