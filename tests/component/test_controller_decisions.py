"""The controller's decision lines in `$LIMA_HOME/_controller/NAME.log`
(lima.controller.folder.DecisionLog over lima.controller.managed.append_log): one line per
decision about the instance, 0600, size-capped with one rotated file, removed with the
instance; a log that cannot be written never stops a decision."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from lima import paths
from lima.controller import managed
from lima.controller.folder import DecisionLog
from tests.component.test_controller_folder import World


def _lines(p: Path) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in p.read_text().splitlines()]


def test_one_line_per_decision_about_the_instance_in_a_private_file(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.write("web")
    world.converge("web")
    log = managed.log_path("web")
    assert log.parent == paths.lima_home() / "_controller"
    ours = [r for r in world.log.records or () if r["instance"] == "web"]
    assert ours and _lines(log) == json.loads(json.dumps(ours, default=str))
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(log.parent).st_mode) == 0o700
    # A decision about no instance (started, stopped) goes to the stream only.
    world.log.emit("", "started")
    assert sorted(os.listdir(log.parent)) == ["web.json", "web.log"]


def test_the_log_is_rotated_past_its_cap_keeping_one_old_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(managed, "LOG_MAX", 1000)
    log = DecisionLog(io.StringIO())
    for i in range(60):
        log.emit("web", "pass", n=i)
    cur, old = managed.log_path("web"), managed.control_dir() / "web.log.1"
    assert cur.stat().st_size <= 1000 and old.stat().st_size <= 1000
    assert not (managed.control_dir() / "web.log.2").exists()
    seen = [r["n"] for r in _lines(old) + _lines(cur)]
    assert seen == list(range(seen[0], 60))  # contiguous, the newest last, none torn
    assert seen[0] > 0  # older lines were dropped
    assert stat.S_IMODE(cur.stat().st_mode) == 0o600


@pytest.mark.parametrize(("policy", "kept"), [("stop", True), ("delete", False)])
def test_a_prune_by_deletion_removes_the_log(tmp_path: Path, policy: str, kept: bool) -> None:
    world = World(tmp_path, prune=policy)
    path = world.write("web")
    world.converge("web")
    (managed.control_dir() / "web.log.1").write_text("")
    path.unlink()
    world.ctl.scan()
    world.converge("web")
    assert managed.log_path("web").exists() is kept
    assert (managed.control_dir() / "web.log.1").exists() is kept


def test_an_unwritable_log_never_stops_a_decision(caplog: pytest.LogCaptureFixture) -> None:
    d = managed.control_dir()
    d.mkdir(mode=0o700)
    (d / "web.log").symlink_to(d / "elsewhere")  # planted: refused, never written through
    stream = io.StringIO()
    log = DecisionLog(stream)
    log.emit("web", "pass", n=1)
    log.emit("web", "pass", n=2)
    assert [json.loads(ln)["n"] for ln in stream.getvalue().splitlines()] == [1, 2]
    assert not (d / "elsewhere").exists()
    assert sum("cannot append" in r.getMessage() for r in caplog.records) == 1
