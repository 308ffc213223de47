"""`limactl list --filter` and `--yq`: yq expressions over each instance's record.

Called by lima.commands.listing (imported only when one of these flags is given: libjq
costs start-up time). As Lima's list.go: `--filter EXPR` keeps an instance when
`select(EXPR)` (all filters joined by `|`) yields anything; `--yq EXPR` (all joined by
`|`) maps each instance, printed as yq prints: JSON compact, one result per line, scalars
bare (a string without quotes), with empty maps removed as Lima removes them; YAML one
document per instance. Evaluation is lima.yqeval's (libjq).
"""

from __future__ import annotations

import json
from typing import Any

from lima.errors import LimaError
from lima.yqeval import evaluate_all


def keep(rec: dict[str, Any], filters: list[str]) -> bool:
    """Whether the instance passes every filter (Lima's AND of `select(EXPR)`s)."""
    expr = " | ".join(f"select({f})" for f in filters)
    try:
        return bool(evaluate_all(expr, rec))
    except LimaError as exc:
        raise LimaError(f"failed to apply filter `{expr}`: {exc}") from None


def _drop_empty_maps(value: Any) -> Any:
    """Lima's `del(.. | select(tag == "!!map" and length == 0))`, repeated until nothing
    changes: no empty map anywhere below the top."""
    if isinstance(value, dict):
        out = {k: _drop_empty_maps(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(value, list):
        return [v for v in map(_drop_empty_maps, value) if v != {}]
    return value


def _scalar(value: Any) -> str | None:
    """yq's bare scalar (`UnwrapScalar`), or None for a map or a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return None
    return json.dumps(value)


def json_result(value: Any, tty: bool = False) -> str:
    """One result as yq's JSON encoder (indent 0) prints it, with its newline; on a
    terminal (`tty`) indented by 4 and coloured, as Lima prints it there."""
    value = _drop_empty_maps(value)
    bare = _scalar(value)
    if bare is not None:
        return bare + "\n"
    if tty:
        from lima.jsoncolor import pretty

        return pretty(value) + "\n"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def yaml_result(value: Any) -> str:
    """One result as yq's YAML encoder prints it (block style, arrays not indented)."""
    bare = _scalar(value)
    if bare is not None:
        return bare + "\n"
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def apply(recs: list[dict[str, Any]], expr: str, fmt: str, tty: bool = False) -> str:
    """The output of `--yq EXPR` over the instances, in format json or yaml (`tty`: JSON
    for a terminal)."""
    out: list[str] = []
    for rec in recs:
        results = evaluate_all(expr, rec)
        if fmt == "json":
            out.extend(json_result(r, tty) for r in results)
        elif results:
            # yq separates the documents it prints (not before the first one)
            out.append(("---\n" if out else "") + "".join(yaml_result(r) for r in results))
    return "".join(out)
