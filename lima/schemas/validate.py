"""check(): every problem of a lima.yaml document, with file and line, sorted.

Called by `lima.schemas.resolve()` on the merged raw document (bases embedded, `file:`
references inlined) and again on the filled one, and by `limactl validate`. First the JSON
Schema (lima.schema.json: types and structure; unknown keys become warnings), then Lima's
semantic rules (rules.py, rules_net.py). Nothing here raises for a bad document: problems
are data, and the caller decides (SpecError with all of them at once).
"""

from __future__ import annotations

from typing import Any

from lima.errors import Problem
from lima.schemas import rules, rules_net
from lima.schemas.lines import LineMap, format_path, line_of
from lima.schemas.rulebase import Ctx
from lima.schemas.schemacheck import schema_problems

__all__ = ["LineMap", "check"]


def check(data: Any, lines: LineMap, source: str, *, filled: bool = False) -> list[Problem]:
    """All problems in `data` (errors and warnings, `warning=True`), sorted by file, line,
    field path. `lines` maps paths to (file, line); a path without an entry takes its
    nearest parent's. With `filled=True` the document has been through defaults.fill(),
    so the rules that only make sense before template expansion (every param is used)
    are skipped."""
    if not isinstance(data, dict):
        return [Problem(source, 0, "", "the document must be a mapping of lima.yaml fields")]
    problems: list[Problem] = []
    for path, message, warning in schema_problems(data):
        file, line = line_of(lines, path, source)
        problems.append(Problem(file, line, format_path(path), message, warning))
    ctx = Ctx(data, lines, source, filled=filled)
    for rule in (*rules.RULES, *rules_net.RULES):
        rule(ctx)
    problems.extend(ctx.problems)
    return sorted(set(problems), key=lambda p: (p.file, p.line, p.path, p.message, p.warning))
