"""The Entry rows of lima.schemas.fields (per-entry builtins of list fields) against the
schema and the fill: every row names a key of the list's items, every fixed builtin is what
the fill writes into a minimal entry, and every key the fill computes has a Derived row."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lima.schemas import defaults, fields
from lima.schemas.defaults import fill
from lima.schemas.hostfacts import HostFacts

SCHEMA = json.loads((Path(fields.__file__).parent / "lima.schema.json").read_text())
HOST = HostFacts(arch="x86_64", cpus=2, memory=3 << 30, user="alice", uid=501,
                 comment="Alice A", home="/home/alice", timezone="Europe/Paris",
                 machine_id="abc", tempdir="/tmp")
LISTS = sorted({row.list_path for row in fields.ENTRIES})
# What an entry needs before the fill looks at it at all (mounts: a location).
REQUIRED: dict[str, dict[str, Any]] = {"mounts": {"location": "/srv/data"}}


def _object(node: dict[str, Any]) -> dict[str, Any]:
    """The schema of an object: `$ref` followed, the object branch of an `anyOf`."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _object(SCHEMA["$defs"][ref.split("/")[-1]])
    for branch in node.get("anyOf", ()):
        found = _object(branch)
        if "properties" in found:
            return found
    return node


def _schema_at(path: str, node: dict[str, Any]) -> dict[str, Any] | None:
    for key in path.split("."):
        sub = _object(node).get("properties", {}).get(key)
        if sub is None:
            return None
        node = sub
    return node


@pytest.mark.parametrize("row", fields.ENTRIES, ids=lambda r: f"{r.list_path}[].{r.key}")
def test_every_entry_row_names_a_key_of_the_list_items(row: fields.Entry) -> None:
    assert fields.covering(tuple(row.list_path.split("."))) is fields.field(row.list_path)
    listed = _schema_at(row.list_path, SCHEMA)
    assert listed is not None and "items" in listed, row.list_path
    assert _schema_at(row.key, listed["items"]) is not None, (row.list_path, row.key)
    if row.when is not None:
        assert _schema_at(row.when[0], listed["items"]) is not None
    for key in row.exclusive:
        assert _schema_at(key, listed["items"]) is not None


def test_rows_are_unique_and_the_walk_finds_something() -> None:
    keys = [(row.list_path, row.key) for row in fields.ENTRIES]
    assert len(set(keys)) == len(keys)
    # Guards the walk above: a schema key that is not there must not be found.
    assert _schema_at("sshfs.nosuch", _schema_at("mounts", SCHEMA)["items"]) is None  # type: ignore[index]
    assert {"provision", "probes", "portForwards", "networks", "mounts"} <= set(LISTS)


def _minimal(row: fields.Entry) -> dict[str, Any]:
    """The smallest entry the row applies to: its `when`, and the objects around its key."""
    entry = copy.deepcopy(REQUIRED.get(row.list_path, {}))
    if row.when is not None:
        entry[row.when[0]] = row.when[1]
    node = entry
    for part in row.key.split(".")[:-1]:
        node = node.setdefault(part, {})
    return entry


def _document(list_path: str, entry: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    *parents, last = list_path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = [entry]
    return doc


def _at(node: Any, path: str) -> Any:
    for key in path.split("."):
        node = node[key]
    return node


def _filled_entry(row: fields.Entry, tmp_path: Path) -> dict[str, Any]:
    out = fill(_document(row.list_path, _minimal(row)), name="dev", lima_home=tmp_path,
               host=HOST)
    (entry,) = _at(out, row.list_path)
    assert isinstance(entry, dict)
    return entry


FIXED = [r for r in fields.ENTRIES
         if r.default is not fields.UNSET and not isinstance(r.default, fields.Derived)]
DERIVED = [r for r in fields.ENTRIES if isinstance(r.default, fields.Derived)]


@pytest.mark.parametrize("row", FIXED, ids=lambda r: f"{r.list_path}[].{r.key}")
def test_every_fixed_entry_builtin_is_filled(row: fields.Entry, tmp_path: Path) -> None:
    entry = _filled_entry(row, tmp_path)
    value = _at(entry, row.key)
    assert value == row.default and type(value) is type(row.default)


@pytest.mark.parametrize("row", DERIVED, ids=lambda r: f"{r.list_path}[].{r.key}")
def test_every_derived_entry_builtin_is_computed(row: fields.Entry, tmp_path: Path) -> None:
    assert row.default.rule
    assert _at(_filled_entry(row, tmp_path), row.key) not in (None, "")


def test_the_table_has_the_builtins_the_review_names() -> None:
    fixed = {(r.list_path, r.key): r.default for r in FIXED}
    assert fixed == {
        ("provision", "mode"): "system", ("provision", "content"): "",
        ("provision", "overwrite"): True, ("provision", "owner"): "root:root",
        ("provision", "permissions"): "644",
        ("provision", "skipDefaultDependencyResolution"): False,
        ("probes", "mode"): "readiness",
        ("portForwards", "proto"): "any", ("portForwards", "hostIP"): "127.0.0.1",
        ("networks", "metric"): 100,
        ("mounts", "writable"): False, ("mounts", "sshfs.cache"): True,
        ("mounts", "sshfs.followSymlinks"): False, ("mounts", "9p.securityModel"): "none",
        ("mounts", "9p.protocolVersion"): "9p2000.L", ("mounts", "9p.msize"): "128KiB",
    }
    assert {(r.list_path, r.key) for r in DERIVED} >= {
        ("portForwards", "guestIP"), ("portForwards", "guestPortRange"),
        ("portForwards", "hostPortRange"), ("networks", "interface"),
        ("networks", "macAddress"), ("mounts", "9p.cache"), ("probes", "description"),
    }


def test_a_when_row_stays_out_of_other_entries(tmp_path: Path) -> None:
    out = fill({"provision": [{"script": "#!/bin/sh\ntrue"}]}, name="dev",
               lima_home=tmp_path, host=HOST)
    assert out["provision"] == [{"script": "#!/bin/sh\ntrue", "mode": "system"}]


def test_keys_the_user_set_are_kept(tmp_path: Path) -> None:
    rule = {"guestPort": 80, "proto": "udp", "hostIP": "0.0.0.0", "guestIP": "10.0.0.1"}
    out = fill({"portForwards": [rule]}, name="dev", lima_home=tmp_path, host=HOST)
    assert out["portForwards"] == [{**rule, "guestIPMustBeZero": False,
                                    "guestPortRange": [80, 80], "hostPortRange": [80, 80]}]


def _leaves(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return {leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")}
    return {prefix[:-1]}


@pytest.mark.parametrize("row", fields.ENTRIES, ids=lambda r: f"{r.list_path}[].{r.key}")
def test_every_key_the_fill_adds_to_an_entry_has_a_row(row: fields.Entry,
                                                       tmp_path: Path) -> None:
    entry = _filled_entry(row, tmp_path)
    added = _leaves(entry) - _leaves(_minimal(row))
    rows = {r.key: r for r in fields.entry_rows(row.list_path)}
    assert [key for key in added if key not in rows] == []
    assert [key for key in added if rows[key].default is fields.UNSET] == []


@pytest.mark.parametrize("list_path", LISTS)
def test_a_computation_without_a_derived_row_is_refused(list_path: str) -> None:
    """_fill_entry checks the fill's computations against the Derived rows, both ways."""
    entry = copy.deepcopy(REQUIRED.get(list_path, {}))
    with pytest.raises(ValueError, match="Derived rows"):
        defaults._fill_entry(entry, 0, list_path, {"nosuch": lambda _e, _i: 1})
    if any(r.list_path == list_path for r in DERIVED):
        with pytest.raises(ValueError, match="Derived rows"):
            defaults._fill_entry(entry, 0, list_path)


def test_is_unset() -> None:
    assert fields.is_unset(None, ())
    assert not fields.is_unset("", ()) and fields.is_unset("", (fields.FALSY,))
    assert fields.is_unset(0, (0,)) and not fields.is_unset(False, (0,))  # 0 is not False
    assert fields.is_unset([0, 0], (fields.FALSY, [0, 0]))
    assert not fields.is_unset([1, 2], (fields.FALSY, [0, 0]))
    assert fields.is_unset([], (fields.FALSY,)) and not fields.is_unset(True, (fields.FALSY,))
