"""The argument parser of `limactl shell`, with Lima's rules (called by lima.commands.shell).

Lima parses `limactl shell` flags with pflag and interspersed arguments off: flags are
read up to the first argument that is not one (or up to `--`, which is dropped), and
everything after belongs to the instance name and the guest command. Unknown flags are
refused with pflag's message; boolean flags take `--flag` or `--flag=VALUE` (never a
separate value); string flags take `--flag VALUE` or `--flag=VALUE`. The global flags
Lima accepts on every verb (`--tty`, `--yes`, `--debug`, `--log-level`, `--log-format`)
are read here too. A pure function, unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lima.errors import LimaError

BOOL_FLAGS = ("start", "preserve-env", "reconnect", "tty", "yes", "debug", "help")
STRING_FLAGS = ("instance", "shell", "workdir", "sync", "log-level", "log-format")
SHORTHANDS = {"y": "yes", "h": "help"}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class UsageError(LimaError):
    """The command line is wrong (Lima's exit status 1)."""


@dataclass
class ShellArgs:
    """The flags given (`flags`: name -> value, for the flags given) and the rest."""

    flags: dict[str, str | bool] = field(default_factory=dict)
    instance: str = ""
    command: list[str] = field(default_factory=list)

    def get(self, name: str, default: str | bool = "") -> str | bool:
        return self.flags.get(name, default)

    def given(self, name: str) -> bool:
        return name in self.flags


def _bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f'invalid argument "{value}" for "--{name}" flag: '
                     f'strconv.ParseBool: parsing "{value}": invalid syntax')


def parse_flags(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """(flags given, positional arguments), reading flags as pflag does."""
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name in BOOL_FLAGS:
                flags[name] = _bool(name, value) if eq else True
            elif name in STRING_FLAGS:
                if not eq:
                    if i + 1 >= len(args):
                        raise UsageError(f"flag needs an argument: --{name}")
                    i += 1
                    value = args[i]
                flags[name] = value
            else:
                raise UsageError(f"unknown flag: --{name}")
        else:
            letters, eq, value = arg[1:].partition("=")
            for n, letter in enumerate(letters):
                long = SHORTHANDS.get(letter)
                if long is None:
                    raise UsageError(f"unknown shorthand flag: '{letter}' in {arg}")
                last = n == len(letters) - 1
                flags[long] = _bool(long, value) if eq and last else True
        i += 1
    return flags, args[i:]


def parse(args: list[str]) -> ShellArgs:
    """The flags, the instance and the guest command of `limactl shell ARGS`.

    With `--instance NAME` every positional argument is the command; else the first is
    the instance, and a `--` right after it is dropped (`limactl shell dev -- ls`).
    """
    flags, rest = parse_flags(args)
    parsed = ShellArgs(flags=flags)
    if flags.get("help"):
        return parsed
    instance = str(flags.get("instance", ""))
    if instance:
        parsed.instance, parsed.command = instance, rest
        return parsed
    if not rest:
        raise UsageError("requires instance name as first argument")
    parsed.instance = rest[0]
    parsed.command = rest[2:] if rest[1:2] == ["--"] else rest[1:]
    return parsed


HELP = """\
Execute shell in Lima

`lima` is an alias for `limactl shell $LIMA_INSTANCE` ($LIMA_INSTANCE defaults to
"default").

The first `ssh` on PATH connects to the instance; set $SSH to use another.

Environment variables:
  --preserve-env passes the host's environment variables to the guest, except those
  LIMA_SHELLENV_BLOCK names (a comma-separated list of patterns, `*` matching any run
  of characters; start it with + to add to the built-in list, shown by `limactl info`
  as shellEnvBlock). Variables LIMA_SHELLENV_ALLOW names pass even when blocked.

Usage:
  limactl shell [flags] INSTANCE [COMMAND...]

Flags:
      --preserve-env     Propagate environment variables to the shell
      --reconnect        Reconnect to the SSH session
      --shell string     Shell interpreter, e.g. /bin/bash
      --start            Start the instance if it is not already running
      --sync string      Not supported by limapy (Lima: copy a host directory to the
                         guest and vice-versa upon exit)
      --workdir string   Working directory
  -h, --help             help for shell

Global Flags:
      --debug              debug mode
      --log-level string   Set the logging level [trace, debug, info, warn, error]
      --tty                Enable TUI interactions such as asking whether to start a
                           stopped instance (default: true when stdout is a terminal)
  -y, --yes                Alias of --tty=false
"""
