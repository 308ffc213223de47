"""Fast paths of `limactl`: command lines answered without importing click (about a third
of the start-up time of `limactl list`).

Called first by lima.cli.main; returns None for every command line it does not take, which
then goes through click (lima.cliapp). It takes only plain forms whose meaning is beyond
doubt: `limactl list|ls` with instance names and the flags -q/--quiet, --json,
--all-fields, -w/--wide (no global flag, no `--`); and `limactl --help`/`-h`
(lima.helpfast renders click's page). tests/component/test_clifast.py runs each form both
ways and compares stdout, stderr and the exit code.
"""

from __future__ import annotations

# `limactl list` flags taken here -> lima.commands.listing.run_list's parameter.
LIST_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--json": "as_json",
              "--all-fields": "all_fields", "-w": "wide", "--wide": "wide"}


def run(args: list[str]) -> int | None:
    """The exit code, or None when click must handle `args`."""
    if args and args[0] in ("list", "ls"):
        return _list(args[1:])
    if args in (["--help"], ["-h"]):
        from lima import helpfast

        return helpfast.print_root_help()
    return None


def _list(rest: list[str]) -> int | None:
    options: dict[str, bool] = {}
    names: list[str] = []
    for arg in rest:
        if arg.startswith("-"):
            key = LIST_FLAGS.get(arg)
            if key is None:
                return None
            options[key] = True
        else:
            names.append(arg)
    from lima import logfmt
    from lima.commands.listing import run_list

    # What the root command does for a silent verb without global flags.
    logfmt.set_format("text", "info")
    run_list(tuple(names), quiet=options.get("quiet", False),
             as_json=options.get("as_json", False), all_fields=options.get("all_fields", False),
             wide=options.get("wide", False))
    return 0
