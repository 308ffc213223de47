"""`limactl --help` without click: click's page for the root group, rendered here.

Called by lima.clifast. Click formats the page from the root group's options (declared in
lima.cliapp, copied below as click writes their rows) and the verbs' short help
(lima.cli.SHORT_HELP, shortened as click shortens it) and the plugins (lima.plugins),
wrapped at click's width. The
equality with click's own page at many widths is tested (tests/component/test_clifast.py);
should click change its layout, that test says so. Stdlib only (textwrap, os).
"""

from __future__ import annotations

import os
import sys

# (option column, help) as click writes them for lima.cliapp's root options.
OPTION_ROWS = (
    ("-v, --version", "Show the version and exit."),
    ("--debug", "Debug mode"),
    ("--log-format string", 'Set the logging format [text, json] (default "text")'),
    ("--log-level string", "Set the logging level [trace, debug, info, warn, error]"),
    ("--tty", "Enable TUI interactions such as opening an editor. Defaults to true when "
              "stdout is a terminal. Set to false for automation."),
    ("-y, --yes", "Alias of --tty=false"),
    ("-h, --help", "Show this message and exit."),
)
USAGE = "Usage: limactl [OPTIONS] COMMAND [ARGS]..."


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns, as click asks it (COLUMNS, then the terminal on
    stdout, then 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    import textwrap

    wrapper = textwrap.TextWrapper(width, initial_indent=indent, subsequent_indent=indent,
                                   replace_whitespace=False)
    return wrapper.wrap(text.expandtabs())


def short_help(text: str, limit: int) -> str:
    """click's shortening of a verb's help for the Commands list."""
    words = text.partition("\n\n")[0].split()
    if words and words[0] == "\b":
        words = words[1:]
    for i, word in enumerate(words):
        if word.endswith(".") and (i == len(words) - 1 or not words[i + 1][0].islower()):
            words = words[:i + 1]
            break
    line = " ".join(words)
    if len(line) <= limit:
        return line
    if limit < 3:
        return "..."
    import textwrap

    return textwrap.shorten(line, limit, placeholder="...", break_on_hyphens=False)


def _definition_list(rows: list[tuple[str, str]], width: int) -> list[str]:
    """click's write_dl at indent 2: first column up to 30 wide, 2 spaces apart."""
    first_col = min(max(len(a) for a, _ in rows), 30) + 2
    out: list[str] = []
    for first, second in rows:
        line = "  " + first
        if not second:
            out.append(line)
            continue
        if len(first) <= first_col - 2:
            line += " " * (first_col - len(first))
        else:
            out.append(line)
            line = " " * (first_col + 2)
        lines = _wrap(second, max(width - first_col - 2, 10)) or [""]
        out.append(line + lines[0])
        out.extend(" " * (first_col + 2) + rest for rest in lines[1:])
    return out


def root_help(columns: int) -> str:
    """The page click prints for `limactl --help` on a terminal `columns` wide."""
    from importlib.util import find_spec

    from lima.cli import HIDDEN, ROOT_HELP, SHORT_HELP, VERBS

    width = max(min(columns, 80) - 2, 50)
    verbs = sorted(v for v in VERBS if v not in HIDDEN
                   and find_spec(f"lima.commands.{VERBS[v].split(':')[0]}") is not None)
    lines = [USAGE, "", *_wrap(ROOT_HELP, width, "  "), "", "Options:",
             *_definition_list(list(OPTION_ROWS), width)]
    if verbs:
        limit = width - 6 - max(len(v) for v in verbs)
        rows = [(v, short_help(SHORT_HELP.get(v, ""), limit)) for v in verbs]
        lines += ["", "Commands:", *_definition_list(rows, width)]
    from lima import plugins

    plugin_rows = plugins.help_rows()
    if plugin_rows:
        lines += ["", f"{plugins.SECTION}:", *_definition_list(plugin_rows, width)]
    return "\n".join(lines) + "\n"


def print_root_help() -> int | None:
    """Print the page; None (click answers) when a verb has no SHORT_HELP entry."""
    from lima.cli import HIDDEN, SHORT_HELP, VERBS

    if any(v not in SHORT_HELP for v in VERBS if v not in HIDDEN):
        return None
    sys.stdout.write(root_help(terminal_columns()))
    sys.stdout.flush()
    return 0
