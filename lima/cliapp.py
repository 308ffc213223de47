"""The click application behind `limactl`: the root group (Lima's global flags, taken out
by lima.globalflags) and the lazy loading of verbs from lima.cli.VERBS.

Imported by lima.cli.main when a command line needs click (every one but the fast paths of
lima.clifast: `limactl --help` and plain `limactl list`, which answer without importing click).
"""

from __future__ import annotations

import importlib
import sys

import click

from lima import LIMA_COMPAT_VERSION
from lima.cli import (
    GLOBALS_KEY,
    HIDDEN,
    LOGGING_FLAGS,
    PASSTHROUGH_VERBS,
    ROOT_HELP,
    SHORT_HELP,
    SILENT_VERBS,
    VERBS,
)
from lima.globalflags import LOG_FORMATS, YES_DEPRECATED_VERBS, GlobalFlags, split_global_flags


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(v for v in VERBS if v not in HIDDEN and self._available(v))

    def _available(self, name: str) -> bool:
        import importlib.util  # only `--help` lists the verbs

        module = VERBS[name].split(":")[0]
        return importlib.util.find_spec(f"lima.commands.{module}") is not None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's Commands section, from SHORT_HELP (same truncation, no verb imported)."""
        verbs = self.list_commands(ctx)
        if not verbs:
            return
        limit = formatter.width - 6 - max(len(v) for v in verbs)
        rows = []
        for verb in verbs:
            text = SHORT_HELP.get(verb)
            # A stand-in command with that help shortens it as click does the verb's own.
            command = click.Command(verb, help=text) if text else self.get_command(ctx, verb)
            rows.append((verb, command.get_short_help_str(limit) if command else ""))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        from lima import plugins

        plugins.format_help(formatter)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Take Lima's global flags out of the whole command line first (lima.globalflags)."""
        # A plugin (a verb limactl does not know) gets every argument after its name.
        flags, rest = split_global_flags(
            args, lambda verb: verb in PASSTHROUGH_VERBS or verb not in VERBS,
            lambda verb: self._value_options(ctx, verb))
        ctx.meta[GLOBALS_KEY] = flags
        if flags.log_format in LOG_FORMATS:  # so that a usage error below is in that format
            from lima import logfmt

            logfmt.set_format(flags.log_format, "info")
        return super().parse_args(ctx, rest)

    def _value_options(self, ctx: click.Context, verb: str) -> set[str]:
        """The verb's options (and its subcommands') that take a separate value."""
        found: set[str] = set()
        todo = [self.get_command(ctx, verb)]
        while todo:
            command = todo.pop()
            if isinstance(command, click.Group):
                todo.extend(command.commands.values())
            for param in command.params if command else ():
                if isinstance(param, click.Option) and not param.is_flag and not param.count:
                    found.update(param.opts)
        return found

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = VERBS.get(cmd_name)
        if target is None:  # a `limactl-NAME` plugin, as in Lima 2.x
            from lima import plugins

            return plugins.command(cmd_name)
        module_name, attr = target.split(":")
        qualified = f"lima.commands.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:  # the verb exists but one of its imports is missing
                raise
            return None
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             help=ROOT_HELP)
@click.version_option(LIMA_COMPAT_VERSION, "--version", "-v", prog_name="limactl",
                      message="%(prog)s version %(version)s")
# The global flags are read by lima.globalflags (before or after the verb); these
# declarations only show them in `--help`, with Lima's words.
@click.option("--debug", is_flag=True, expose_value=False, help="Debug mode")
@click.option("--log-format", metavar="string", expose_value=False,
              help='Set the logging format [text, json] (default "text")')
@click.option("--log-level", metavar="string", expose_value=False,
              help="Set the logging level [trace, debug, info, warn, error]")
@click.option("--tty", is_flag=True, expose_value=False,
              help="Enable TUI interactions such as opening an editor. Defaults to true when "
                   "stdout is a terminal. Set to false for automation.")
@click.option("-y", "--yes", is_flag=True, expose_value=False, help="Alias of --tty=false")
@click.pass_context
def limactl(ctx: click.Context) -> None:
    # (help: ROOT_HELP, given to the group below)
    flags: GlobalFlags = ctx.meta.get(GLOBALS_KEY) or GlobalFlags()
    flags.check()
    ctx.ensure_object(dict)
    ctx.obj["debug"] = flags.debug
    # The shared contract: verbs read find_root().obj["tty"] (Lima's --tty, --yes).
    ctx.obj["tty"] = flags.resolved_tty(sys.stdout.isatty())
    ctx.obj["log_format"] = flags.log_format
    from lima import logfmt

    logfmt.set_debug(flags.debug)
    level = flags.level()
    if ctx.invoked_subcommand in SILENT_VERBS and not (set(flags.given) & LOGGING_FLAGS):
        logfmt.set_format(flags.log_format, level)
        return
    logfmt.configure(flags.log_format, level)
    if flags.yes is not None and ctx.invoked_subcommand in YES_DEPRECATED_VERBS:
        import logging

        logging.getLogger(__name__).warning(
            "--yes flag is deprecated (--tty=false is still supported and works in the same "
            "way. Also consider using --start)")
