"""Hypothesis: no input crashes the loader or the checker.

Documents are generated from lima.schema.json itself (mostly well-typed values, plus wrong
types and unknown keys now and then), dumped to YAML and loaded back; random text and
bytes are thrown at the loader too. The only acceptable failure is a SpecError; check()
always returns Problems. The fast schema evaluator must agree with jsonschema's
Draft202012Validator on every generated document."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lima.errors import Problem, SpecError
from lima.schemas.lines import from_loaded
from lima.schemas.schemacheck import jsonschema_validator, load_schema, schema_problems
from lima.schemas.validate import check
from lima.schemas.yamlload import Loaded, load_yaml

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INTERESTING_STRINGS = st.sampled_from([
    "", "~", "~/src", "/tmp/lima", "/etc", "relative", "{{.Home}}/x", "{{.Param.Key}}",
    "4GiB", "2.5GiB", "100GiB", "lots", "x86_64", "aarch64", "i386", "qemu", "vz", "Linux",
    "sha256:" + "ab" * 32, "sha256:xyz", "md5:00", "tcp", "udp", "system", "data", "yq",
    "readiness", "#!/bin/sh\ntrue\n", "echo hi", "127.0.0.1", "0.0.0.0", "::1", "nope",
    "reverse-sshfs", "9p", "virtiofs", "52:55:55:12:34:56", "eth0", "1.0.0", "99.0.0",
])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), INTERESTING_STRINGS,
                    st.text(max_size=8))


def _for_type(t: str, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        return st.one_of(st.integers(-5, 70000), st.sampled_from([0, 1, 22, 80, 65535, 65536]))
    if t == "number":
        return st.one_of(st.integers(-5, 100), st.floats(-10, 10, allow_nan=False))
    if t == "string":
        return st.one_of(INTERESTING_STRINGS, st.text(max_size=12))
    if t == "array":
        items = schema.get("items")
        inner = from_schema(items, depth + 1) if items is not None else SCALARS
        return st.lists(inner, max_size=3)
    if t == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if props:
            optional = {k: from_schema(v, depth + 1) for k, v in props.items()}
            required = {k: optional.pop(k) for k in schema.get("required", []) if k in optional}
            base = st.fixed_dictionaries(required, optional=optional)
            unknown = st.dictionaries(st.sampled_from(["colour", "x-extra"]), SCALARS,
                                      max_size=1)
            return st.builds(lambda a, b: {**b, **a}, base, unknown)
        value = from_schema(extra, depth + 1) if isinstance(extra, dict) else SCALARS
        return st.dictionaries(st.sampled_from(["Key", "FOO", "1bad", "a b", "x86_64"]), value,
                               max_size=3)
    return SCALARS


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    root = load_schema()
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if depth > 6:
        return st.none()
    if "anyOf" in schema:
        good = st.one_of([from_schema(b, depth + 1) for b in schema["anyOf"]])
    else:
        types = schema.get("type", ["null"])
        types = [types] if isinstance(types, str) else types
        good = st.one_of([_for_type(t, schema, depth) for t in types])
    # Now and then a value of the wrong type, to exercise every error path.
    return st.one_of(good, good, good, SCALARS) if depth else good


DOCUMENTS = from_schema(load_schema())


def _check_loaded(loaded: Loaded) -> None:
    assert isinstance(loaded.data, dict)
    for path, line in loaded.lines.items():
        assert isinstance(path, tuple) and line >= 1
    found = check(loaded.data, from_loaded(loaded.lines, "f.yaml"), "f.yaml")
    assert all(isinstance(p, Problem) for p in found)
    assert found == sorted(found, key=lambda p: (p.file, p.line, p.path, p.message, p.warning))
    for p in found:
        str(p)


@SETTINGS
@given(DOCUMENTS)
def test_generated_documents_never_crash(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        loaded = load_yaml(text, "f.yaml")
    except SpecError as e:
        assert e.problems and all(p.file == "f.yaml" for p in e.problems)
        return
    _check_loaded(loaded)
    # The filled-document mode and the raw data (no YAML round trip) must not crash either.
    check(doc, {}, "f.yaml", filled=True)


@SETTINGS
@given(DOCUMENTS)
def test_fast_schema_engine_agrees_with_jsonschema(doc: dict[str, Any]) -> None:
    fast_ok = not any(not warn for _, _, warn in schema_problems(doc))
    assert fast_ok == jsonschema_validator().is_valid(doc)


YAMLISH = st.lists(st.sampled_from([
    "a", "cpus", "images", ":", ": ", "- ", "-", "\n", "  ", "&x ", "*x", "<<: ", "!!str ",
    "!!python/object:os.system ", "!x ", "{", "}", "[", "]", ",", "'", '"', "|\n", ">\n", "#",
    "---\n", "...\n", "? ", "~", "0x1F", "1.5", "true", "\t", "%YAML 1.1\n", "\\",
]), max_size=40).map("".join)


@SETTINGS
@given(st.one_of(YAMLISH, st.text(max_size=200)))
def test_random_text_gives_data_or_spec_error(text: str) -> None:
    try:
        loaded = load_yaml(text, "f.yaml")
    except SpecError as e:
        assert e.problems and all(p.file == "f.yaml" for p in e.problems)
        return
    _check_loaded(loaded)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_give_data_or_spec_error(raw: bytes) -> None:
    try:
        loaded = load_yaml(raw, "f.yaml")
    except SpecError as e:
        assert e.problems
        return
    _check_loaded(loaded)
