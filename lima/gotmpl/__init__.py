"""The part of Go's text/template that limapy needs, as a package with no lima imports.

`lima.schemas.defaults.fill()` expands host and guest templates with `execute`, as do
`limactl list --format` and the `message` field. Supported, with Go's semantics: text and
`{{pipeline}}` actions, `{{-`/`-}}` trimming, comments, string, raw string, number, bool
and nil literals, field chains (`.Param.KEY`, `.`, `$`, `$.X`), parenthesised pipelines,
pipes (`x | f`), `if`/`else if`/`else`/`end`, `with`/`else with`/`else`/`end`, and the
builtin functions and, or, not, eq, ne, lt, le, gt, ge, len, print and println (the ones
Lima's templates use, such as k8s.yaml's `{{if not (and .Param.url .Param.token)}}` and
podman's `{{if eq .HostOS "linux"}}`). lima.gotmpl.parse builds the tree, lima.gotmpl.run
walks it.

The whole template is parsed before anything runs, as Go does. Where Go would fail to parse
or execute it, or where it needs a construct this package does not implement (range,
variables, define/template, other functions), `execute` raises TemplateError and the caller
keeps the original text with a warning, which is what Lima does on its own errors.
A missing map key prints `<no value>` and is false, as in Go with map data; a Struct's
missing field is an error, as in Go with struct data. `limactl list --format` also gets
Lima's json, yaml, indent and missing functions (`execute(..., run.LIMA_FUNCS)`).
"""

from __future__ import annotations

from typing import Any

from lima.gotmpl import parse, run
from lima.gotmpl.errors import MISSING, NO_VALUE, Struct, TemplateError

__all__ = ["MISSING", "NO_VALUE", "Struct", "TemplateError", "execute"]


def execute(text: str, data: dict[str, Any], funcs: frozenset[str] = frozenset()) -> str:
    """Expand `text` with `data` (a map, as Lima passes, or a Struct); `funcs` allows some of
    run.LIMA_FUNCS (json, yaml, indent, missing) besides Go's builtins."""
    if "{{" not in text:
        return text
    nodes = parse.parse(text, funcs)
    out: list[str] = []
    run.run(nodes, data, data, out)
    return "".join(out)
