"""docs/lima-compat.md, the table of Lima's verbs and flags against limapy's, stays whole:
every verb limactl offers has a row, and every row says what limapy does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lima.cli import HIDDEN, VERBS

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "lima-compat.md"
# limapy's own verbs and internals that are not Lima's (they still have rows, but under
# other words: `hostagent INSTANCE (hidden)`, `controller DIR`).
INTERNAL = {"__complete"}


def rows() -> list[list[str]]:
    out = []
    for line in DOC.read_text().splitlines():
        if line.startswith("| ") and not line.startswith(("| Lima verb/flag", "|---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out.append(cells)
    return out


def test_every_row_has_three_filled_cells() -> None:
    table = rows()
    assert len(table) > 100
    for cells in table:
        assert len(cells) == 3, cells
        assert cells[0] and cells[1], cells


def test_every_verb_has_a_row() -> None:
    first = " ".join(cells[0] for cells in rows())
    verbs = {v for v in VERBS if v not in INTERNAL}
    missing = sorted(v for v in verbs if f"`{v}" not in first and f"({v}" not in first
                     and f"`{v}`" not in first and f", {v}" not in first)
    assert missing == [], f"no row in docs/lima-compat.md for: {missing}"
    assert HIDDEN  # aliases (ls, rm, cp, tmpl) are named in their verb's row
