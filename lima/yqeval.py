"""Evaluate a yq expression on plain data, with libjq (the PyPI `jq` bindings).

Lima runs yq (mikefarah/yq) over its YAML; yq's expression language is a superset of
jq's, and everything Lima's edit flags generate (`.cpus = 4`, `.mounts += [...]`,
`del(.x)`, `|=`, `unique_by`) is jq as well. Callers: lima.editflags (`--set`),
`limactl list --yq`, `limactl template yq`. Pure: no I/O.

As Lima does for yq, the expression cannot read the environment: `env` fails and `$ENV`
is empty, and jq's `import`/`include` (which read files) cannot appear after the prelude;
lima.yqrestrict first refuses what names them (and yq's strenv, envsubst, load...) with
Lima's messages.
"""

from __future__ import annotations

from typing import Any

from lima.errors import LimaError

# Put in front of every expression: no environment, and no module directives after it.
_PRELUDE = 'def env: error("env operations have been disabled"); {} as $ENV | '
# Where yq and jq differ on what Lima generates: yq's `unique` and `unique_by(f)` keep the
# first of each value in its place (`.dns |= unique`), jq's sort. Defined first, they win.
_YQ_PRELUDE = ("def unique_by(f): reduce .[] as $x ([]; if any(.[]; (f) == ($x | f)) "
               "then . else . + [$x] end); def unique: unique_by(.); ")


def evaluate(expr: str, data: Any) -> Any:
    """The first result of `expr` on `data` (None when it yields nothing)."""
    results = evaluate_all(expr, data)
    return results[0] if results else None


def evaluate_all(expr: str, data: Any) -> list[Any]:
    """Every result of `expr` on `data`, in order."""
    import jq  # ~3 ms; only the verbs that take expressions pay for it

    from lima.yqrestrict import check

    check(expr)  # no env or file operations, as in Lima
    try:
        program = jq.compile(_YQ_PRELUDE + _PRELUDE + expr)
    except ValueError as exc:
        raise LimaError(f"failed to parse the yq expression {expr!r}: {_first_line(exc)}") from None
    try:
        return list(program.input_value(data).all())
    except ValueError as exc:
        raise LimaError(f"failed to evaluate the yq expression {expr!r}: {_first_line(exc)}"
                        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
