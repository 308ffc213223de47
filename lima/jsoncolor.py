"""JSON for a terminal: indented by 4 and coloured, as `limactl list --json` and
`limactl info` print it when stdout is a terminal (Lima pipes both through yq's coloured
JSON encoder then). The colours are jq's defaults (null grey, strings green, keys blue,
the rest the terminal's colour; each token ends with a reset, ESC[0m).

Called by lima.commands.listing, lima.commands.listyq and lima.commands.info. Pure.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

NULL, PLAIN, STRING, CONTAINER, KEY = "0;90", "0;39", "0;32", "1;39", "34;1"


def output_is_tty() -> bool:
    """Lima's uiutil.OutputIsTTY: stdout is a terminal, or $_LIMA_OUTPUT_IS_TTY is set
    (Lima's switch for testing the terminal output)."""
    return bool(os.environ.get("_LIMA_OUTPUT_IS_TTY")) or sys.stdout.isatty()


def _paint(code: str, text: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def _scalar(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if value is None:
        return _paint(NULL, text)
    return _paint(STRING if isinstance(value, str) else PLAIN, text)


def pretty(value: Any, indent: int = 4, level: int = 0) -> str:
    """`value` as coloured JSON indented by `indent` (no trailing newline)."""
    if not isinstance(value, (dict, list)):
        return _scalar(value)
    pad, end = " " * (indent * (level + 1)), " " * (indent * level)
    open_, close = ("{", "}") if isinstance(value, dict) else ("[", "]")
    if not value:
        return _paint(CONTAINER, open_ + close)
    if isinstance(value, dict):
        items = [f"{pad}{_paint(KEY, json.dumps(k, ensure_ascii=False))}"
                 f"{_paint(CONTAINER, ':')} {pretty(v, indent, level + 1)}"
                 for k, v in value.items()]
    else:
        items = [pad + pretty(v, indent, level + 1) for v in value]
    joiner = _paint(CONTAINER, ",") + "\n"
    return f"{_paint(CONTAINER, open_)}\n{joiner.join(items)}\n{end}{_paint(CONTAINER, close)}"
