"""The field table (lima.schemas.fields) against the schema, the fill and the spec dataclasses:
no schema field without a drift class, no row without a field, no default written twice."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.schemas import fields, spec
from lima.schemas.defaults import fill
from lima.schemas.hostfacts import HostFacts

SCHEMA = json.loads((Path(fields.__file__).parent / "lima.schema.json").read_text())
HOST = HostFacts(arch="x86_64", cpus=2, memory=3 << 30, user="alice", uid=501,
                 comment="Alice A", home="/home/alice", timezone="Europe/Paris",
                 machine_id="abc", tempdir="/tmp")



def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(SCHEMA["$defs"][ref.split("/")[-1]])
    return node


def schema_paths(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, bool]]:
    """(dotted path, has sub-properties) for every property of the schema, depth first."""
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        sub = _resolve(sub)
        yield path, "properties" in sub
        yield from schema_paths(sub, f"{path}.")


def test_every_schema_field_has_a_drift_class() -> None:
    missing = []
    for path, has_children in schema_paths(SCHEMA):
        row = fields.covering(tuple(path.split(".")))
        # An object may be covered field by field instead of as a whole.
        if row is None and not has_children:
            missing.append(path)
    assert missing == [], f"fields with no row in lima/schemas/fields.py: {missing}"


def test_every_row_names_a_schema_field() -> None:
    known = {path for path, _ in schema_paths(SCHEMA)}
    assert [f.path for f in fields.FIELDS if f.path not in known] == []
    assert len({f.path for f in fields.FIELDS}) == len(fields.FIELDS)


def test_the_schema_has_the_fields_the_issue_names() -> None:
    # Guards the walk above: a broken walk would find nothing and pass vacuously.
    paths = {path for path, _ in schema_paths(SCHEMA)}
    assert {"cpus", "ssh.localPort", "vmOpts.qemu.cpuType", "rosetta.binfmt"} <= paths
    assert len(paths) > 60


@pytest.mark.parametrize(("path", "cls"), [
    ("cpus", "restart"), ("memory", "restart"), ("mounts", "restart"), ("env", "restart"),
    ("param", "restart"), ("provision", "restart"), ("ssh.localPort", "restart"),
    ("disk", "restart"), ("images", "recreate"), ("arch", "recreate"),
    ("vmType", "recreate"), ("os", "recreate"), ("portForwards", "live"),
    ("probes", "live"), ("message", "live"), ("copyToHost", "live"),
])
def test_design_classes(path: str, cls: str) -> None:
    assert fields.field(path).drift.value == cls


def _at(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for key in path.split("."):
        node = node[key]
    return node


def test_fill_uses_the_table_builtins(tmp_path: Path) -> None:
    filled = fill({}, name="dev", lima_home=tmp_path, host=HOST)
    checked = 0
    for row in fields.FIELDS:
        if row.default is fields.UNSET or isinstance(row.default, fields.Derived):
            continue
        if row.path == "user.home":  # a template, expanded by the fill
            assert _at(filled, row.path) == "/home/alice.guest"
            continue
        assert _at(filled, row.path) == fields.builtin(row.path, HOST), row.path
        checked += 1
    assert checked > 40
    assert filled["cpus"] == 2 and filled["memory"] == "1.5GiB"


def test_every_filled_top_level_key_is_classified(tmp_path: Path) -> None:
    filled = fill({"message": "hi", "images": [{"location": "/a.img"}]}, name="dev",
                  lima_home=tmp_path, host=HOST)
    assert [k for k in filled if fields.covering((k,)) is None
            and not any(f.path.startswith(f"{k}.") for f in fields.FIELDS)] == []


_EMPTY = (False, 0, "", None, ())


def test_spec_dataclass_defaults_are_only_empty_values() -> None:
    """The builtins live in the table; spec.py may only default to "nothing"."""
    offenders = []
    for cls in (spec.FileRef, spec.KernelRef, spec.Image, spec.Mount, spec.Provision,
                spec.Probe, spec.PortForward, spec.SSHConfig, spec.User, spec.QemuOptions,
                spec.InstanceSpec):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING and f.default not in _EMPTY:
                offenders.append(f"{cls.__name__}.{f.name}={f.default!r}")
            if f.default_factory is not dataclasses.MISSING:
                made = f.default_factory()
                if dataclasses.is_dataclass(made):
                    made = [v for v in vars(made).values() if v not in _EMPTY]
                if made:
                    offenders.append(f"{cls.__name__}.{f.name}")
    assert offenders == []


def test_covering_picks_the_longest_row() -> None:
    cover = fields.covering
    assert cover(("ssh", "localPort")) is fields.field("ssh.localPort")
    assert cover(("mounts", "writable")) is fields.field("mounts")
    assert cover(("vmOpts", "vz", "rosetta")) is fields.field("vmOpts.vz")
    assert cover(("nosuch",)) is None


def test_builtin_refuses_derived_and_unset() -> None:
    with pytest.raises(ValueError):
        fields.builtin("mountType", HOST)
    with pytest.raises(ValueError):
        fields.builtin("message", HOST)
    first = fields.builtin("mounts", HOST)
    first.append("x")
    assert fields.builtin("mounts", HOST) == []  # a fresh copy each time
