"""A changed file version through the controller's plan (lima.controller.planner), over the
fake driver and a fake clock: each drift class (live, restart under --restart=auto and
=stage, recreate, reject), one decision line per plan, `managedBy` in status.json, and
`limactl delete` refused on a managed instance (and, once paused, removing the
controller's decision log with it). No threads, no sleeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lima import paths
from lima.cli import main
from lima.controller import managed
from lima.controller.status_store import StatusStore
from lima.drivers.applied import read_applied
from lima.states.model import RESTART_REQUIRED
from lima.states.phases import Phase
from tests.component.test_controller_folder import TINY, World


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _running(world: World, name: str, text: str = TINY) -> None:
    world.write(name, text)
    assert world.converge(name) is None
    assert world.fake.vm(name).boots == 1


def _plans(world: World, name: str) -> list[dict[str, Any]]:
    return [r for r in world.log.records or () if r["instance"] == name
            and r["event"] == "plan"]


def _edit(world: World, name: str, text: str, passes: int = 4) -> None:
    """A new version of the file, then the events and resyncs that keep coming."""
    world.write(name, text)
    world.converge(name)
    for _ in range(passes):
        world.ctl.sync(name)


def _status(name: str) -> Any:
    st = StatusStore().load(name)
    assert st is not None
    return st


def test_a_restart_class_change_restarts_once_under_auto(world: World) -> None:
    _running(world, "web")
    gen_before = _status("web").generation
    _edit(world, "web", TINY + "cpus: 2\n")
    vm = world.fake.vm("web")
    assert vm.boots == 2 and vm.qemu_alive  # exactly one restart
    st = _status("web")
    assert st.phase is Phase.RUNNING and st.generation != gen_before
    assert not st.is_true(RESTART_REQUIRED)
    applied = read_applied(paths.instance_dir("web"))
    assert applied is not None and applied.filled["cpus"] == 2
    assert "cpus: 2" in (paths.instance_dir("web") / paths.LIMA_YAML).read_text()
    [plan] = _plans(world, "web")
    assert plan["verdict"] == "restart" and plan["restart"] == "auto"
    assert plan["changes"] == [{"path": "cpus", "old": 1, "new": 2, "class": "restart",
                                "action": "stop, then boot with the new spec"}]


def test_a_restart_class_change_is_staged_under_stage(tmp_path: Path) -> None:
    world = World(tmp_path, restart="stage")
    _running(world, "web")
    _edit(world, "web", TINY + "memory: 512MiB\n")
    vm = world.fake.vm("web")
    assert vm.boots == 1 and vm.qemu_alive  # left running
    assert _status("web").is_true(RESTART_REQUIRED)
    [plan] = _plans(world, "web")
    assert plan["verdict"] == "restart" and "staged" in plan["action"]
    # The next start (here: after a crash) boots the staged spec, and RestartRequired goes.
    world.fake.kill_qemu("web")
    for _ in range(20):
        world.converge("web")
        if vm.qemu_alive:
            break
        world.clock.advance(300)
    assert vm.boots == 2
    st = _status("web")
    assert st.phase is Phase.RUNNING and not st.is_true(RESTART_REQUIRED)
    applied = read_applied(paths.instance_dir("web"))
    assert applied is not None and applied.filled["memory"] == "512MiB"


def test_a_refused_version_supersedes_a_staged_one(tmp_path: Path) -> None:
    """Staged memory, then a recreate-class version: the staged spec is no one's intent
    any more, so the next boot (a crash) is the one that ran, and lima.yaml says so."""
    world = World(tmp_path, restart="stage")
    _running(world, "web")
    inst = paths.instance_dir("web")
    first = (inst / paths.LIMA_YAML).read_text()
    gen = _status("web").generation
    _edit(world, "web", TINY + "memory: 512MiB\n")
    assert _status("web").is_true(RESTART_REQUIRED)
    assert "512MiB" in (inst / paths.LIMA_YAML).read_text()
    _edit(world, "web", TINY + "memory: 512MiB\narch: aarch64\nimages:\n"
          "- location: build:tiny\n  arch: aarch64\n")
    assert [p["verdict"] for p in _plans(world, "web")] == ["restart", "recreate"]
    assert (inst / paths.LIMA_YAML).read_text() == first
    assert not _status("web").is_true(RESTART_REQUIRED)
    vm = world.fake.vm("web")
    world.fake.kill_qemu("web")
    for _ in range(20):
        world.converge("web")
        if vm.qemu_alive:
            break
        world.clock.advance(300)
    assert vm.boots == 2 and _status("web").generation == gen
    applied = read_applied(inst)
    assert applied is not None and applied.filled["memory"] != "512MiB"
    assert applied.filled["arch"] == "x86_64" and applied.document == first


def test_a_live_change_is_recorded_without_a_restart(world: World) -> None:
    _running(world, "web")
    n = len(world.fake.executed)
    _edit(world, "web", TINY + "message: hello\n")
    vm = world.fake.vm("web")
    assert vm.boots == 1 and vm.qemu_alive and len(world.fake.executed) == n
    st = _status("web")
    applied = read_applied(paths.instance_dir("web"))
    assert applied is not None and applied.filled["message"] == "hello"
    assert st.generation == applied.generation and not st.is_true(RESTART_REQUIRED)
    [plan] = _plans(world, "web")
    assert plan["verdict"] == "live" and [c["path"] for c in plan["changes"]] == ["message"]


def test_a_recreate_class_change_is_never_done_by_the_controller(world: World) -> None:
    _running(world, "web")
    n = len(world.fake.executed)
    gen = _status("web").generation
    path = world.folder / "web.yaml"
    _edit(world, "web", TINY + "arch: aarch64\nimages:\n- location: build:tiny\n"
          "  arch: aarch64\n")
    assert len(world.fake.executed) == n and world.fake.vm("web").qemu_alive
    assert _status("web").generation == gen
    [plan] = _plans(world, "web")  # once per file version, whatever the resyncs
    assert plan["verdict"] == "recreate"
    assert f"limactl apply --recreate {path}" in plan["action"]
    assert "arch" in [c["path"] for c in plan["changes"]]


def test_a_disk_shrink_is_rejected_once_per_version(world: World) -> None:
    _running(world, "web", TINY + "disk: 2GiB\n")
    n = len(world.fake.executed)
    _edit(world, "web", TINY + "disk: 1GiB\n")
    _edit(world, "web", TINY + "disk: 1GiB\n# same intent, new file version\n")
    assert len(world.fake.executed) == n and world.fake.vm("web").qemu_alive
    plans = _plans(world, "web")
    assert [p["verdict"] for p in plans] == ["reject", "reject"]
    assert plans[0]["changes"][0]["path"] == "disk"
    assert plans[0]["changes"][0]["action"] == "refused: a disk cannot shrink"
    applied = read_applied(paths.instance_dir("web"))
    assert applied is not None and applied.filled["disk"] == "2GiB"


def test_status_json_says_who_manages_the_instance(world: World) -> None:
    _running(world, "web")
    raw = json.loads(StatusStore().path("web").read_text())
    assert raw["managedBy"] == f"controller:{world.folder}"
    # A save by anyone (here: a restart-class change) carries the key over.
    _edit(world, "web", TINY + "cpus: 2\n")
    assert json.loads(StatusStore().path("web").read_text())["managedBy"] == raw["managedBy"]
    # The file removed (--prune=stop): stopped and released, the key dropped.
    (world.folder / "web.yaml").unlink()
    world.ctl.scan()
    world.converge("web")
    assert managed.ownership("web") is None
    assert "managedBy" not in json.loads(StatusStore().path("web").read_text())


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out + err


def test_delete_of_a_managed_instance_says_to_pause_first(
    world: World, capsys: pytest.CaptureFixture[str],
) -> None:
    _running(world, "web")
    inst = paths.instance_dir("web")
    (inst / paths.LIMA_YAML).write_text(TINY)  # the fake writes none; `delete` wants one
    world.fake.kill_qemu("web")  # stopped: only the controller stands in the way
    code, out = _cli(["delete", "web"], capsys)
    assert code == 1, out
    assert "limactl controller pause web" in out and "Traceback" not in out
    assert inst.is_dir()
    assert managed.log_path("web").is_file()  # the controller's decision lines
    managed.pause("web")
    code, out = _cli(["delete", "web"], capsys)
    assert code == 0, out
    assert not inst.exists()
    assert not managed.log_path("web").exists()  # gone with the instance


def test_an_unknown_restart_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="restart must be one of"):
        World(tmp_path, restart="later")
