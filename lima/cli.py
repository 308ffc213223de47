"""The command line: `limactl` and `lima`.

The only place that prints errors and picks exit codes. Verbs live in
`lima.commands.<module>` and are imported lazily, so `limactl validate` does not pay
for paramiko or pycdlib at start-up; the click application is in lima.cliapp, and
lima.clifast answers `limactl --help` and plain `limactl list` without importing click.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from lima.errors import LimaError

# verb -> "module:attribute" under lima.commands
VERBS: dict[str, str] = {
    "validate": "validate:validate",
    "info": "info:info",
    "create": "instances:create",
    "list": "listcmd:list_",
    "ls": "listcmd:list_",
    "delete": "instances:delete",
    "rm": "instances:delete",
    "remove": "instances:delete",
    "protect": "instances:protect",
    "unprotect": "instances:unprotect",
    "prune": "prune:prune",
    "apply": "lifecycle:apply",
    "diff": "diff:diff",
    "start": "startform:start",
    "edit": "edit:edit",
    "stop": "lifecycle:stop",
    "suspend": "lifecycle:suspend",
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
    "snapshot": "snapshot:snapshot",
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
    "create": "Create an instance of Lima",
    "delete": "Delete instances (what limactl put in their directory; other files are kept).",
    "diff": "Show what applying FILE to instance NAME would change; change nothing.",
    "disk": "Lima disk management.",
    "edit": "Edit an instance of Lima or a template",
    "help": "Help about any command",
    "info": "Show diagnostic information as JSON.",
    "list": "List instances of Lima.",
    "network": "Lima network management",
    "protect": "Protect instances from deletion.",
    "prune": "Prune garbage objects (the download cache, and what killed commands left).",
    "screenshot": "Capture a screenshot of the VM display",
    "shell": "Execute shell in Lima",
    "snapshot": "Manage instance snapshots",
    "show-ssh": "Show the SSH command line (DEPRECATED; use `ssh -F` instead)",
    "sudoers": "Generate the content of the /etc/sudoers.d/lima file",
    "template": "Lima template management (EXPERIMENTAL)",
    "tunnel": "Create a tunnel for Lima",
    "completion": "Generate the autocompletion script for the specified shell",
    "start": "Start an instance of Lima",
    "stop": "Stop instances (default: \"default\").",
    "suspend": "Save a running instance's whole state to disk and stop it; start resumes it.",
    "unprotect": "Allow deleting instances again.",
    "validate": "Validate lima.yaml files and templates (FILE, template:NAME, or - for stdin).",
    "watch": "Watch events from instances (all of them, and new ones, without NAME).",
}
# Verbs that never log: they skip importing and configuring `logging` (~6 ms of start-up,
# and `limactl validate` has a 150 ms budget including the interpreter).
SILENT_VERBS = {"validate", "info", "list", "ls"}
# Verbs whose arguments after the verb belong to someone else (the guest command).
PASSTHROUGH_VERBS = {"shell"}
# Global flags that make even a silent verb set up `logging`.
LOGGING_FLAGS = {"debug", "log-level", "log-format"}
GLOBALS_KEY = "lima.globalflags"
ROOT_HELP = "limactl: Lima (Linux virtual machines) as a declarative reconciler."


def __getattr__(name: str) -> Any:
    """`lima.cli.limactl` (the click group) and `LazyGroup` live in lima.cliapp, imported
    on first use: the fast paths (lima.clifast) answer without click."""
    if name in ("limactl", "LazyGroup"):
        from lima import cliapp

        return getattr(cliapp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _debug_requested(argv: list[str]) -> bool:
    from lima import logfmt

    return logfmt.debug() or "--debug" in argv or os.environ.get("LIMA_DEBUG") == "1"


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point of `limactl`: run the verb, map expected errors to messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    from lima import logfmt

    logfmt.reset()
    try:
        from lima import clifast

        rc = clifast.run(args)  # None: this command line needs click
        if rc is None:
            rc = _run_click(args)
    except LimaError as exc:
        if _debug_requested(args):
            raise
        _say(logfmt.fatal(str(exc)))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # a bug: show one line unless --debug
        if _debug_requested(args):
            raise
        _say(logfmt.fatal(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)"))
        sys.exit(70)
    sys.exit(rc)


def _run_click(args: list[str]) -> int:
    """The verb through click: its exit code; click's own errors shown as click shows them
    (or as a logrus fatal line with --log-format json)."""
    import click

    from lima import logfmt
    from lima.cliapp import limactl

    try:
        rc = limactl.main(args=args, prog_name="limactl", standalone_mode=False)
    except click.exceptions.Abort:
        _say("Aborted!")
        return 130
    except click.UsageError as exc:
        # cobra's wording for what Lima users' scripts match on, and Lima's exit code 1
        shown = click.UsageError(usage_message(exc), ctx=exc.ctx)
        if logfmt.json_mode():
            _say(logfmt.fatal(shown.format_message()))
        else:
            shown.show()
        return 1
    except click.ClickException as exc:
        if logfmt.json_mode():
            _say(logfmt.fatal(exc.format_message()))
        else:
            exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return rc if isinstance(rc, int) else 0


def usage_message(exc: Any) -> str:
    """A click usage error in cobra's words where Lima's differ: `unknown command "X" for
    "limactl"`, `unknown flag: --X`, `unknown shorthand flag: 'X' in -X`."""
    import click

    if isinstance(exc, click.NoSuchOption):
        name = exc.option_name
        if name.startswith("--"):
            return f"unknown flag: {name}"
        return f"unknown shorthand flag: {name[1:2]!r} in {name}"
    text = str(exc.message)
    if text.startswith("No such command "):
        verb = text[len("No such command "):].rstrip(".").strip("'\"")
        path = exc.ctx.command_path if exc.ctx is not None else "limactl"
        return f'unknown command "{verb}" for "{path}"'
    return text


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
        print(f"Usage: lima [COMMAND...]\n\n"
                   f"`lima` runs `limactl shell {instance}` with COMMAND (or a login shell).\n"
                   f"Set $LIMA_INSTANCE to use another instance than \"{instance}\", and\n"
                   "$LIMA_SHELL and $LIMA_WORKDIR for the shell and the working directory\n"
                   "in the guest.\n\n"
                   "`limactl shell --help` describes the flags it takes.")
        return
    main(lima_args(args, os.environ))


if __name__ == "__main__":
    main()
