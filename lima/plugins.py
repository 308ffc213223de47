"""limactl plugins: `limactl NAME ARGS...` runs an executable `limactl-NAME`, as Lima 2.x does.

Called by lima.cli's LazyGroup for a verb it does not know (`command`), and for
`limactl --help`'s "Available Plugins (Experimental)" section (`format_help`).

Lima's rules, kept here: plugins are looked up in limactl's own directory (as started, and
with symlinks resolved), then every $PATH directory, then `<prefix>/libexec/lima` and
`<prefix>/lib/lima` beside limactl's directory; a file counts when its name starts with
`limactl-`, it is a regular file (after symlinks) and any execute bit is set. The first
directory holding a name wins; built-in verbs win over plugins. A script (a file starting
with `#!`) may describe itself with `<limactl-desc>TEXT</limactl-desc>` on one line; that
is its line in `--help`. Names starting with `url-` are left out of `--help`. The plugin
gets every argument after its name untouched (global flags go before the name), limactl's
stdin, stdout and stderr, the environment with PATH set to the search directories above,
and limactl exits with its exit status (255 when a signal ended it, as Go's os.Exit(-1)).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from lima.errors import LimaError

if TYPE_CHECKING:
    import click

PREFIX = "limactl-"
HIDDEN_PREFIX = "url-"
SECTION = "Available Plugins (Experimental)"
_DESC = re.compile(rb"<limactl-desc>(.*?)</limactl-desc>")


class Plugin(NamedTuple):
    """One `limactl-NAME` executable. (No click nor dataclasses in this module's imports:
    lima.helpfast lists the plugins in `limactl --help` without them.)"""

    name: str
    path: Path
    description: str = ""


def self_dirs(argv0: str | None = None) -> list[str]:
    """The directory of limactl as it was started (argv[0] looked up on PATH), then that of
    the file it resolves to, when different."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if not argv0:
        return []
    if os.sep in argv0:
        found: str | None = argv0
    else:
        import shutil  # (not at the top: `limactl --help` lists plugins, start-up counts)

        found = shutil.which(argv0)
    if not found:
        return []
    dirs = [os.path.dirname(os.path.abspath(found))]
    real = os.path.dirname(os.path.realpath(found))
    if real != dirs[0]:
        dirs.append(real)
    return dirs


def libexec_dirs(selves: list[str]) -> list[str]:
    """<PREFIX>/libexec/lima and <PREFIX>/lib/lima beside limactl's directories, those
    holding anything (also `limactl info`'s libexecPaths)."""
    found = []
    for d in selves:
        prefix = os.path.dirname(d)
        for candidate in (os.path.join(prefix, "libexec", "lima"),
                          os.path.join(prefix, "lib", "lima")):
            try:
                if os.listdir(candidate):
                    found.append(candidate)
            except OSError:
                continue
    return found


def search_dirs(path_env: str | None = None, argv0: str | None = None) -> list[str]:
    """Where plugins are looked for, in order (also the PATH a plugin is given)."""
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    selves = self_dirs(argv0)
    return [*selves, *(path_env.split(os.pathsep) if path_env else []),
            *libexec_dirs(selves)]


def _description(path: Path) -> str:
    try:
        with path.open("rb") as f:
            if f.read(2) != b"#!":
                return ""
            content = f.read()
    except OSError:
        return ""
    match = _DESC.search(content)
    return match.group(1).decode(errors="replace").strip(" ") if match else ""


def _scan(directory: str) -> list[Plugin]:
    try:
        entries = sorted(os.scandir(directory or "."), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(PREFIX) or len(entry.name) == len(PREFIX):
            continue
        try:
            st = os.stat(entry.path)  # follows symlinks, as Go's os.Stat
        except OSError:
            continue
        if not (stat.S_ISREG(st.st_mode) and st.st_mode & 0o111):
            continue
        path = Path(entry.path)
        found.append(Plugin(entry.name[len(PREFIX):], path, _description(path)))
    return found


def discover(path_env: str | None = None, argv0: str | None = None) -> list[Plugin]:
    """Every plugin, the first found for each name, sorted by name."""
    seen: dict[str, Plugin] = {}
    for directory in search_dirs(path_env, argv0):
        for plugin in _scan(directory):
            seen.setdefault(plugin.name, plugin)
    return sorted(seen.values(), key=lambda p: p.name)


def find(name: str) -> Plugin | None:
    if not name or os.sep in name:
        return None
    return next((p for p in discover() if p.name == name), None)


def run(plugin: Plugin, args: list[str]) -> int:
    """Run the plugin with `args` in the foreground and return limactl's exit status."""
    import signal

    from lima.drivers import runner

    env = {"PATH": os.pathsep.join(search_dirs())}
    try:
        proc = runner.spawn([plugin.path, *args], stdin=None, env=env, user_program=True)
    except (OSError, runner.CommandError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LimaError(f"external command `{plugin.path}` failed: {reason}") from None
    # Ctrl-C reaches the plugin (same process group); it decides, limactl reports.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return code if code >= 0 else 255


def command(name: str) -> click.Command | None:
    """The click command for `limactl NAME` when NAME is a plugin, else None."""
    plugin = find(name)
    if plugin is None:
        return None
    import click

    class PluginCommand(click.Command):
        """A plugin as a click command: every argument after its name is the plugin's."""

        def __init__(self, plugin: Plugin) -> None:
            super().__init__(plugin.name, help=plugin.description, add_help_option=False,
                             hidden=plugin.name.startswith(HIDDEN_PREFIX))
            self.plugin = plugin

        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            ctx.args = list(args)  # untouched: no option parsing, `--` kept
            return ctx.args

        def invoke(self, ctx: click.Context) -> int:
            return run(self.plugin, list(ctx.args))

    return PluginCommand(plugin)


def help_rows() -> list[tuple[str, str]]:
    """`limactl --help`'s rows for the plugins (not those named url-*)."""
    return [(p.name, p.description) for p in discover() if not p.name.startswith(HIDDEN_PREFIX)]


def format_help(formatter: click.HelpFormatter) -> None:
    """`limactl --help`'s section listing the plugins (not those named url-*)."""
    rows = help_rows()
    if not rows:
        return
    with formatter.section(SECTION):
        formatter.write_dl(rows)
