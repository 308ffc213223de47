"""lima.states.drift.classify: one change per changed field, its class from the field table,
the verdict the strongest class; every field of a filled document classified."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from lima.schemas import fields
from lima.schemas.defaults import fill
from lima.schemas.hostfacts import HostFacts
from lima.states.drift import Drift, classify

HOST = HostFacts(arch="x86_64", cpus=2, memory=3 << 30, user="alice", uid=501,
                 comment="Alice A", home="/home/alice", timezone="Europe/Paris",
                 machine_id="abc", tempdir="/tmp")


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return fill({"images": [{"location": "/a.qcow2"}], "cpus": 1, "disk": "10GiB"},
                name="dev", lima_home=tmp_path, host=HOST)


def changed(doc: dict[str, Any], **edits: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for dotted, value in edits.items():
        keys = dotted.split("__")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def test_same_document_is_nothing(base: dict[str, Any]) -> None:
    plan = classify(base, copy.deepcopy(base))
    assert plan.changes == () and plan.verdict == "nothing"


def test_cpus_is_one_restart_change(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, cpus=2))
    assert [(c.path, c.old, c.new, c.cls) for c in plan.changes] == [
        ("cpus", 1, 2, Drift.RESTART)]
    assert plan.verdict == "restart"
    assert "stop" in plan.changes[0].action


def test_stage_says_so(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, cpus=2), restart="stage")
    assert "RestartRequired" in plan.changes[0].action


def test_nested_fields_are_compared_one_by_one(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, ssh__localPort=60022, message="hello"))
    assert {(c.path, c.cls) for c in plan.changes} == {
        ("ssh.localPort", Drift.RESTART), ("message", Drift.LIVE)}
    assert plan.verdict == "restart"


def test_a_list_is_one_change(base: dict[str, Any]) -> None:
    new = changed(base, portForwards=[{"guestPort": 80, "hostPort": 8080}])
    plan = classify(base, new)
    assert [(c.path, c.cls) for c in plan.changes] == [("portForwards", Drift.LIVE)]
    assert plan.verdict == "live"


def test_a_map_with_one_row_is_one_change(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, env={"A": "1", "B": "2"}))
    assert [c.path for c in plan.changes] == ["env"]


def test_disk_grow_is_restart_and_shrink_is_reject(base: dict[str, Any]) -> None:
    grow = classify(base, changed(base, disk="20GiB"))
    assert grow.verdict == "restart" and "grows" in grow.changes[0].action
    shrink = classify(base, changed(base, disk="5GiB"))
    assert shrink.verdict == "reject" and "shrink" in shrink.changes[0].action
    same = classify(base, changed(base, disk=10 << 30))  # same size, other spelling
    assert same.verdict == "restart"  # the text differs; the size does not shrink


def test_recreate_fields_need_the_flag(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, images=[{"location": "/b.qcow2", "arch": "x86_64"}]))
    assert plan.verdict == "recreate"
    assert "--recreate" in plan.changes[0].action
    asked = classify(base, changed(base, images=[]), recreate=True)
    assert "data lost" in asked.changes[0].action


def test_reject_beats_everything(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, disk="1GiB", arch="aarch64", message="m"))
    assert plan.verdict == "reject"
    assert {c.cls for c in plan.changes} == {Drift.REJECT, Drift.RECREATE, Drift.LIVE}


def test_unknown_field_is_a_restart(base: dict[str, Any]) -> None:
    plan = classify(base, changed(base, somethingNew={"a": 1}))
    assert [(c.path, c.old, c.cls) for c in plan.changes] == [
        ("somethingNew", None, Drift.RESTART)]


def test_json_shape(base: dict[str, Any]) -> None:
    doc = classify(base, changed(base, cpus=3)).to_json()
    assert doc == {"verdict": "restart", "changes": [
        {"path": "cpus", "old": 1, "new": 3, "class": "restart",
         "action": "stop, then boot with the new spec"}]}


def _leaves(doc: Any, keys: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(doc, dict) and doc:
        return [leaf for k, v in doc.items() for leaf in _leaves(v, (*keys, k))]
    return [keys]


def test_every_filled_field_changes_into_a_classified_change(base: dict[str, Any]) -> None:
    """Change each leaf of a filled document in turn: exactly one change comes out, and its
    class is the table's (never the unknown-field fallback)."""
    seen = 0
    for keys in _leaves(base):
        new = copy.deepcopy(base)
        node = new
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = "changed-value" if keys != ("disk",) else "20GiB"
        plan = classify(base, new)
        assert len(plan.changes) == 1, keys
        row = fields.covering(keys)
        assert row is not None, f"{keys} has no row"
        assert plan.changes[0].cls is row.drift, keys
        seen += 1
    assert seen > 50


def test_fields_lima_2_2_added_are_no_drift_for_an_older_instance(base: dict[str, Any]) -> None:
    """An instance applied by a limapy following Lima 2.1 has no tpm, osOpts,
    user.passwordlessSudo or audio.interface in lima.applied.json: their builtin values
    now are what it ran with, not a change; any other value is one."""
    old = copy.deepcopy(base)
    for key in ("tpm", "osOpts"):
        del old[key]
    del old["user"]["passwordlessSudo"]
    del old["audio"]["interface"]
    assert classify(old, base).verdict == "nothing"
    plan = classify(old, changed(base, audio__interface="virtio"))
    assert [c.path for c in plan.changes] == ["audio.interface"]
    assert plan.verdict == "restart"
