"""The command line: `limactl` and `lima`.

The only place that prints errors and picks exit codes. Verbs live in
`lima.commands.<module>` and are imported lazily, so `limactl validate` does not pay
for paramiko or pycdlib at start-up.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping

import click

from lima import LIMA_COMPAT_VERSION
from lima.errors import LimaError

# verb -> "module:attribute" under lima.commands
VERBS: dict[str, str] = {
    "validate": "validate:validate",
    "info": "info:info",
    "create": "instances:create",
    "list": "listing:list_",
    "ls": "listing:list_",
    "delete": "instances:delete",
    "rm": "instances:delete",
    "remove": "instances:delete",
    "protect": "instances:protect",
    "unprotect": "instances:unprotect",
    "prune": "prune:prune",
    "apply": "lifecycle:apply",
    "diff": "diff:diff",
    "start": "lifecycle:start",
    "stop": "lifecycle:stop",
    "shell": "shell:shell",
    "copy": "copy:copy",
    "cp": "copy:copy",
    "disk": "disk:disk",
    "controller": "controller:controller",
    "watch": "watch:watch",
    "hostagent": "hostagent:hostagent",
    "screenshot": "screenshot:screenshot",
    "autostart": "autostart:autostart",
    "start-at-login": "autostart:start_at_login",
    "network": "network:network",
    "sudoers": "sudoers:sudoers",
    "show-ssh": "showssh:show_ssh",
    "tunnel": "tunnel:tunnel",
    "completion": "completion:completion",
    "__complete": "completion:complete_words",
    "template": "template:template",
    "tmpl": "template:template",
    "help": "help:help_",
    "restart": "restart:restart",
    "clone": "clone:clone",
    "rename": "clone:rename",
    "factory-reset": "factoryreset:factory_reset",
}
HIDDEN = {"hostagent", "ls", "rm", "remove", "cp", "start-at-login", "__complete", "tmpl"}
# Each listed verb's short help, so `limactl --help` imports no verb module (click would
# import all of them for these lines); tests/unit/test_cli_help.py checks they match.
SHORT_HELP: dict[str, str] = {
    "clone": "Clone an instance of Lima",
    "factory-reset": "Factory reset an instance of Lima",
    "rename": "Rename an instance of Lima",
    "restart": "Restart a running instance",
    "apply": "Create each instance when missing, then drive it to Running with FILE's spec.",
    "autostart": "Manage automatic startup of Lima instances",
    "controller": "Watch DIR: one instance per *.yaml file, kept converged.",
    "copy": "Copy files between host and guest.",
    "create": "Create an instance from FILE, template:NAME or - (stdin).",
    "delete": "Delete instances (what limactl put in their directory; other files are kept).",
    "diff": "Show what applying FILE to instance NAME would change; change nothing.",
    "disk": "Lima disk management.",
    "help": "Help about any command",
    "info": "Show diagnostic information as JSON.",
    "list": "List instances of Lima.",
    "network": "Lima network management",
    "protect": "Protect instances from deletion.",
    "prune": "Prune garbage objects (the download cache, and what killed commands left).",
    "screenshot": "Capture a screenshot of the VM display",
    "shell": "Execute shell in Lima",
    "show-ssh": "Show the SSH command line (DEPRECATED; use `ssh -F` instead)",
    "sudoers": "Generate the content of the /etc/sudoers.d/lima file",
    "template": "Lima template management (EXPERIMENTAL)",
    "tunnel": "Create a tunnel for Lima",
    "completion": "Generate the autocompletion script for the specified shell",
    "start": "Start an instance (NAME), or create and start one from FILE / template:NAME.",
    "stop": "Stop an instance.",
    "unprotect": "Allow deleting instances again.",
    "validate": "Validate lima.yaml files and templates (FILE, template:NAME, or - for stdin).",
    "watch": "Watch events from instances (all of them, and new ones, without NAME).",
}
# Verbs that never log: they skip importing and configuring `logging` (~6 ms of start-up,
# and `limactl validate` has a 150 ms budget including the interpreter).
SILENT_VERBS = {"validate", "info", "list", "ls"}
# Verbs whose arguments after the verb belong to someone else (the guest command).
PASSTHROUGH_VERBS = {"shell"}


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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(LIMA_COMPAT_VERSION, "--version", "-v", prog_name="limactl",
                      message="%(prog)s version %(version)s")
@click.option("--debug", is_flag=True, help="Show debug logs and tracebacks.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default=None,
    help="Log level.",
)
@click.pass_context
def limactl(ctx: click.Context, debug: bool, log_level: str | None) -> None:
    """limactl: Lima (Linux virtual machines) as a declarative reconciler."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand in SILENT_VERBS and not debug and log_level is None:
        return
    import logging

    level = "debug" if debug else (log_level or "info")
    logging.basicConfig(
        level={"warn": "WARNING"}.get(level, level.upper()),
        format="%(levelname)s[%(asctime)s] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # The lifecycle machine's library narrates every transition at INFO.
    logging.getLogger("transitions").setLevel(logging.WARNING)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("LIMA_DEBUG") == "1"


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move `--debug` given after the verb in front of it, as Lima accepts its global flags
    anywhere (`limactl validate --debug x.yaml`) while click only takes them before the verb.
    Arguments after `--`, and every argument of a passthrough verb (`shell`) or of a verb
    limactl does not know (a plugin's), stay put."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if args[i] == "--log-level" else 1
    if i >= len(args) or args[i] in PASSTHROUGH_VERBS or args[i] not in VERBS:
        return args
    tail = args[i:]
    end = tail.index("--") if "--" in tail else len(tail)
    moved = [a for a in tail[:end] if a == "--debug"]
    if not moved:
        return args
    kept = [a for a in tail[:end] if a != "--debug"]
    return [*args[:i], *moved, *kept, *tail[end:]]


def main(argv: list[str] | None = None) -> None:
    """Entry point of `limactl`: run the verb, map expected errors to messages and exit codes."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        rc = limactl.main(args=args, prog_name="limactl", standalone_mode=False)
    except LimaError as exc:
        if _debug_requested(args):
            raise
        click.echo(f"limactl: {exc}" if "\n" not in str(exc) else str(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # a bug: show one line unless --debug
        if _debug_requested(args):
            raise
        click.echo(f"limactl: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                   err=True)
        sys.exit(70)
    sys.exit(rc if isinstance(rc, int) else 0)


def lima_args(args: list[str], environ: Mapping[str, str]) -> list[str]:
    """The `limactl` arguments `lima ARGS` stands for, as Lima's wrapper builds them:
    `shell [--workdir $LIMA_WORKDIR] [--shell $LIMA_SHELL] --instance $LIMA_INSTANCE ARGS`,
    so flags in ARGS are `limactl shell`'s (up to the first other word, or `--`). A lone
    `-v`/`--version` is limactl's."""
    if len(args) == 1 and args[0] in ("-v", "--version"):
        return args
    shell_args = ["--instance", environ.get("LIMA_INSTANCE") or "default", *args]
    if environ.get("LIMA_SHELL"):
        shell_args = ["--shell", environ["LIMA_SHELL"], *shell_args]
    if environ.get("LIMA_WORKDIR"):
        shell_args = ["--workdir", environ["LIMA_WORKDIR"], *shell_args]
    return ["shell", *shell_args]


def lima_main(argv: list[str] | None = None) -> None:
    """Entry point of `lima`: `lima CMD...` is `limactl shell $LIMA_INSTANCE CMD...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 1 and args[0] in ("-h", "--help"):
        instance = os.environ.get("LIMA_INSTANCE") or "default"
        click.echo(f"Usage: lima [COMMAND...]\n\n"
                   f"`lima` runs `limactl shell {instance}` with COMMAND (or a login shell).\n"
                   f"Set $LIMA_INSTANCE to use another instance than \"{instance}\", and\n"
                   "$LIMA_SHELL and $LIMA_WORKDIR for the shell and the working directory\n"
                   "in the guest.\n\n"
                   "`limactl shell --help` describes the flags it takes.")
        return
    main(lima_args(args, os.environ))


if __name__ == "__main__":
    main()
