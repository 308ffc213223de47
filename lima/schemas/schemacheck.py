"""JSON Schema check of a lima.yaml document against lima.schema.json, fast.

`validate.check()` calls `schema_problems()`. `limactl validate` must answer in well under
150 ms including interpreter start-up, and importing `jsonschema` alone costs ~60 ms, so
the check runs on a small evaluator of exactly the keywords lima.schema.json uses (type,
properties, required, additionalProperties, items, minItems, maxItems, anyOf, $ref).
The schema itself stays a standard draft 2020-12 document: tests validate it with
jsonschema's Draft202012Validator and check that both engines agree on every document.
Unknown keys are not errors (Lima is not strict either); they come back as warnings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path as FsPath
from typing import Any

from lima.schemas.lines import Path

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "a boolean (true/false)",
               "null": "null"}


@cache
def load_schema() -> dict[str, Any]:
    """lima.schema.json, parsed once per process."""
    text = FsPath(__file__).with_name("lima.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_problems(data: Any) -> Iterator[tuple[Path, str, bool]]:
    """(path, message, is_warning) for every schema violation and every unknown key."""
    root = load_schema()
    yield from _check(data, root, (), root)


@cache
def jsonschema_validator() -> Any:
    """jsonschema's Draft202012Validator for lima.schema.json, built once, imported lazily
    (tests hold the fast evaluator to its verdicts; see the module docstring)."""
    import jsonschema  # type: ignore[import-untyped]  # deferred: ~60 ms of import time

    return jsonschema.Draft202012Validator(load_schema())


def _is_type(value: Any, t: str) -> bool:
    if t == "string":
        return isinstance(value, str)
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, int | float)
    return False


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def _describe(types: list[str]) -> str:
    names = [_TYPE_NAMES.get(t, t) for t in types if t != "null"]
    if not names:
        return "null"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema


def _valid(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    return not any(not warn for _, _, warn in _check(value, schema, (), root))


def _check(value: Any, schema: dict[str, Any], path: Path,
           root: dict[str, Any]) -> Iterator[tuple[Path, str, bool]]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        branches = [_resolve(b, root) for b in schema["anyOf"]]
        if any(_valid(value, b, root) for b in branches):
            # Still report unknown keys of the branch that matched.
            for b in branches:
                if _valid(value, b, root):
                    yield from (p for p in _check(value, b, path, root) if p[2])
                    break
            return
        # Explain with the branch of the value's own type when there is exactly one.
        same = [b for b in branches if any(_is_type(value, t) for t in _types(b))]
        if len(same) == 1:
            yield from _check(value, same[0], path, root)
        else:
            wanted = _describe([t for b in branches for t in _types(b)])
            yield path, f"expected {wanted}, got {_show(value)}", False
        return
    types = _types(schema)
    if types and not any(_is_type(value, t) for t in types):
        yield path, f"expected {_describe(types)}, got {_show(value)}", False
        return
    if isinstance(value, dict):
        yield from _check_object(value, schema, path, root)
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield path, f"expected at least {schema['minItems']} items, got {len(value)}", False
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield path, f"expected at most {schema['maxItems']} items, got {len(value)}", False
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                yield from _check(item, items, (*path, i), root)


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: Path,
                  root: dict[str, Any]) -> Iterator[tuple[Path, str, bool]]:
    for key in schema.get("required", ()):
        if key not in value:
            yield path, f"missing required field {key!r}", False
    props: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        sub = props.get(key)
        if sub is not None:
            yield from _check(item, sub, (*path, key), root)
        elif isinstance(extra, dict):
            yield from _check(item, extra, (*path, key), root)
        elif props and extra is None:
            yield (*path, key), "unknown field (Lima ignores it)", True
