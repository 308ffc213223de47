"""decide() with DesiredState.restart (apply --restart=auto): a boot built from another
generation is powered down once, then booted from the new spec; without the flag it runs on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lima.states.actions import BuildCidata, Done, StopInstance
from lima.states.decide import decide
from lima.states.model import DesiredState, ObservedState, RunState, Status
from lima.states.phases import Phase

NOW = 10_000.0
SPEC: Any = object()
UP = ObservedState(dir_exists=True, has_lima_yaml=True, disks_ready=True, cidata_iid="iid-1",
                   qemu_pid_alive=True, hostagent_pid_alive=True, ssh_ready_iid="iid-1",
                   boot_done_iid="iid-1")
RUNNING = Status(phase=Phase.RUNNING, since=NOW - 5, iid="iid-1", generation="old")


def want(gen: str, restart: bool) -> DesiredState:
    return DesiredState(SPEC, gen, RunState.RUNNING, restart=restart)


def test_restart_stops_a_boot_of_another_generation() -> None:
    assert decide(want("new", True), UP, RUNNING, NOW) == StopInstance(force=False)


def test_without_the_flag_it_keeps_running() -> None:
    assert isinstance(decide(want("new", False), UP, RUNNING, NOW), Done)


@pytest.mark.parametrize("generation", ["new", None])
def test_same_or_unknown_generation_is_left_alone(generation: str | None) -> None:
    status = replace(RUNNING, generation=generation)
    assert isinstance(decide(want("new", True), UP, status, NOW), Done)


def test_after_the_stop_it_boots_with_the_new_spec() -> None:
    down = replace(UP, qemu_pid_alive=False, hostagent_pid_alive=False, ssh_ready_iid=None,
                   boot_done_iid=None)
    stopped = replace(RUNNING, phase=Phase.STOPPED)
    assert isinstance(decide(want("new", True), down, stopped, NOW), BuildCidata)
