"""`x-limapy.runState` through the folder controller (lima.controller.planner), over the fake
driver and a fake clock: a new file that asks for `suspended` boots, then suspends; each
change of the field moves the instance (running -> suspended -> running -> stopped ->
running) without a new boot where a resume does; suspended is refused with virtiofs mounts
(kept running, RunStateRefused in status.json, one decision line); and `--suspend-idle`
still suspends a file that asks for running. No threads, no sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.controller.status_store import StatusStore
from lima.states.model import CondStatus, Status
from lima.states.phases import Phase
from lima.states.runstate import RUN_STATE_REFUSED
from tests.component.test_controller_folder import TINY, World
from tests.component.test_controller_idle import IDLE
from tests.component.test_controller_idle import World as IdleWorld

pytestmark = pytest.mark.component


def wants(state: str) -> str:
    return TINY + f"x-limapy:\n  runState: {state}\n"


def _status(name: str) -> Status:
    st = StatusStore().load(name)
    assert st is not None
    return st


def _edit(world: World, name: str, text: str) -> None:
    world.write(name, text)
    for _ in range(6):  # the pass, and the events and resyncs that keep coming
        delay = world.converge(name)
        if delay:
            world.clock.advance(delay)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_new_file_asking_for_suspended_boots_then_suspends(world: World) -> None:
    _edit(world, "web", wants("suspended"))
    vm = world.fake.vm("web")
    assert vm.boots == 1 and not vm.qemu_alive and vm.saved_generation is not None
    assert _status("web").phase is Phase.SUSPENDED


def test_every_transition_of_the_field(world: World) -> None:
    _edit(world, "web", TINY)
    vm = world.fake.vm("web")
    gen = _status("web").generation
    assert vm.qemu_alive and vm.boots == 1

    _edit(world, "web", wants("suspended"))  # running -> suspended
    assert not vm.qemu_alive and _status("web").phase is Phase.SUSPENDED
    assert _status("web").generation == gen  # not a new spec: the saved state still fits

    _edit(world, "web", wants("running"))  # suspended -> running: a resume, not a boot
    assert vm.qemu_alive and vm.resumes == 1 and vm.boots == 1
    assert _status("web").phase is Phase.RUNNING

    _edit(world, "web", wants("stopped"))  # running -> stopped
    assert not vm.qemu_alive and vm.saved_generation is None
    assert _status("web").phase is Phase.STOPPED

    _edit(world, "web", wants("running"))  # stopped -> running: a boot
    assert vm.qemu_alive and vm.boots == 2

    _edit(world, "web", wants("suspended"))
    _edit(world, "web", wants("stopped"))  # suspended -> stopped: woken, then shut down
    assert not vm.qemu_alive and vm.saved_generation is None
    assert _status("web").phase is Phase.STOPPED
    plans = [r for r in world.log.records or () if r["event"] == "plan"]
    assert [(p["changes"][0]["old"], p["changes"][0]["new"]) for p in plans] == [
        ("running", "suspended"), ("suspended", "running"), ("running", "stopped"),
        ("stopped", "running"), ("running", "suspended"), ("suspended", "stopped")]
    assert {p["verdict"] for p in plans} == {"live"}


def test_a_new_file_asking_for_stopped_is_created_and_never_booted(world: World) -> None:
    _edit(world, "web", wants("stopped"))
    vm = world.fake.vm("web")
    assert vm.created and not vm.qemu_alive and vm.boots == 0
    for _ in range(3):  # resyncs of the unchanged file keep it so
        world.clock.advance(30)
        assert world.converge("web") is None
    assert vm.boots == 0 and _status("web").phase is Phase.CREATED


def test_suspended_is_refused_with_virtiofs_mounts(world: World, tmp_path: Path) -> None:
    text = (wants("suspended") + "mountType: virtiofs\nmounts:\n"
            f"- location: {tmp_path}\n")
    _edit(world, "web", text)
    vm = world.fake.vm("web")
    assert vm.qemu_alive and vm.saved_generation is None  # kept running
    st = _status("web")
    cond = st.condition(RUN_STATE_REFUSED)
    assert cond is not None and cond.status is CondStatus.TRUE
    assert "cannot be suspended" in cond.message and "virtiofs" in cond.message
    refused = [r for r in world.log.records or () if r["event"] == "run-state-refused"]
    assert len(refused) == 1 and refused[0]["action"] == "kept running"
    # Asking for running again clears it.
    _edit(world, "web", text.replace("runState: suspended", "runState: running"))
    cond = _status("web").condition(RUN_STATE_REFUSED)
    assert cond is not None and cond.status is CondStatus.FALSE and vm.qemu_alive


def test_suspend_idle_still_suspends_a_file_that_asks_for_running(tmp_path: Path) -> None:
    world = IdleWorld(tmp_path)
    world.write(wants("running"))
    assert world.sync() == pytest.approx(IDLE) and world.phase() is Phase.RUNNING
    world.clock.advance(IDLE)
    world.sync()
    assert world.suspends() == 1 and world.phase() is Phase.SUSPENDED
