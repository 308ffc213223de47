"""status.json: round trip, atomic writes, tolerance of missing and corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lima import paths
from lima.controller.status_store import StatusStore
from lima.states.model import DEGRADED, READY, CondStatus, Status
from lima.states.phases import Phase


def sample() -> Status:
    s = Status(
        phase=Phase.RUNNING, since=1_700_000_123.25, iid="iid-1", generation="g1",
        observed_generation="g2", retries=2, restarts=1, next_attempt=1_700_000_200.5,
        last_error="ssh: refused",
    )
    s = s.with_condition(READY, CondStatus.TRUE, "Running", "", 1_700_000_100.0, "g2")
    return s.with_condition(DEGRADED, CondStatus.FALSE, "Provisioned", "", 1_700_000_050.0, "g2")


def test_round_trip(_isolated_home: Path) -> None:
    (_isolated_home / "a").mkdir(parents=True)
    store = StatusStore()
    assert store.save("a", sample()) is True
    assert store.load("a") == sample()
    assert store.path("a") == paths.instance_dir("a") / "status.json"


def test_json_shape() -> None:
    d = sample().to_json()
    assert d["phase"] == "running"
    assert d["since"] == "2023-11-14T22:15:23.250000Z"
    assert d["nextAttempt"] == "2023-11-14T22:16:40.500000Z"
    assert d["observedGeneration"] == "g2" and d["lastError"] == "ssh: refused"
    assert [c["type"] for c in d["conditions"]] == ["Ready", "Degraded"]
    assert set(d["conditions"][0]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }
    assert d["conditions"][0]["status"] == "True"
    assert Status.from_json(json.loads(json.dumps(d))) == sample()


def test_missing_dir_and_file(_isolated_home: Path) -> None:
    store = StatusStore()
    assert store.load("nope") is None
    assert store.save("nope", Status(phase=Phase.ABSENT)) is False
    assert not (_isolated_home / "nope").exists()  # a save never resurrects a deleted instance
    failed = Status(phase=Phase.FAILED, last_error="digest mismatch")
    assert store.save("nope", failed) is False  # a failed create leaves no directory
    assert not (_isolated_home / "nope").exists()
    (_isolated_home / "nope").mkdir()
    assert store.save("nope", failed) is True
    assert store.load("nope") == failed


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"version": 99}', '{"version": 1, "phase": "dancing"}',
     '{"version": 1, "phase": "running", "retries": -1}',
     '{"version": 1, "phase": "running", "since": 5}', "\x00\xff"],
)
def test_corrupt_file_is_ignored(_isolated_home: Path, content: str) -> None:
    d = _isolated_home / "c"
    d.mkdir(parents=True)
    (d / "status.json").write_text(content, encoding="utf-8", errors="surrogateescape")
    assert StatusStore().load("c") is None


def test_write_is_atomic_and_leaves_no_temp(_isolated_home: Path) -> None:
    d = _isolated_home / "b"
    d.mkdir(parents=True)
    store = StatusStore()
    store.save("b", Status(phase=Phase.CREATED))
    store.save("b", sample())
    assert sorted(p.name for p in d.iterdir()) == ["status.json"]
    assert json.loads((d / "status.json").read_text())["phase"] == "running"


def test_explicit_home(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    store = StatusStore(tmp_path)
    store.save("x", sample())
    assert (tmp_path / "x" / "status.json").is_file()
