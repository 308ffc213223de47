"""`limactl controller --suspend-idle`: the folder controller over the fake driver on a fake
clock, with the activity probe stubbed. An idle instance is suspended after the idle time,
one in use is not, a suspended one stays suspended (converged), a woken one is left
running until it is idle again, a new file version wakes it, and a new controller keeps
it asleep. No threads, no sleeps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lima.controller import idle
from lima.controller.clock import FakeClock
from lima.controller.driver import Driver
from lima.controller.fake import FakeDriver
from lima.controller.folder import DecisionLog, FolderController, Options
from lima.controller.status_store import StatusStore
from lima.states.actions import ResumeInstance, SuspendInstance
from lima.states.phases import Phase

pytestmark = pytest.mark.component

TINY = "base: template:tiny\n"
IDLE = 600.0


class World:
    def __init__(self, tmp: Path) -> None:
        self.folder = tmp / "vms"
        self.folder.mkdir()
        self.clock = FakeClock()
        self.fake = FakeDriver(self.clock)
        self.activity: idle.Activity | None = idle.Activity(0, 0)
        self.ctl = self.controller()

    def controller(self) -> FolderController:
        def factory(name: str) -> Driver:
            return self.fake

        self.log = DecisionLog(io.StringIO(), keep=True, files=False)
        ctl = FolderController(Options(self.folder, suspend_idle=IDLE), driver=factory,
                               clock=self.clock, decisions=self.log,
                               activity=lambda name: self.activity)
        ctl.scan()
        return ctl

    def write(self, text: str = TINY) -> None:
        (self.folder / "web.yaml").write_text(text)
        self.ctl.scan()

    def sync(self, limit: int = 60) -> float | None:
        """Passes until the controller stops asking for an immediate one."""
        for _ in range(limit):
            delay = self.ctl.sync("web")
            if delay is not None and delay < 1e-3:
                self.clock.advance(delay)
                continue
            return delay
        raise AssertionError("no convergence")

    def phase(self) -> Phase:
        st = StatusStore().load("web")
        assert st is not None
        return st.phase

    def suspends(self) -> int:
        return sum(isinstance(a, SuspendInstance) for a in self.fake.executed)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.write()
    return w


def test_an_idle_instance_is_suspended_after_the_idle_time(world: World) -> None:
    delay = world.sync()
    assert world.phase() is Phase.RUNNING
    assert delay == pytest.approx(IDLE)  # comes back when the idle time is up
    world.clock.advance(IDLE / 2)
    assert world.sync() == pytest.approx(IDLE / 2)
    assert world.suspends() == 0
    world.clock.advance(IDLE / 2)
    world.sync()
    assert world.suspends() == 1 and world.phase() is Phase.SUSPENDED
    assert world.fake.vm("web").saved_generation is not None
    [rec] = [r for r in world.log.records or () if r["event"] == "idle-suspend"]
    assert rec["idleFor"] == pytest.approx(IDLE) and rec["sessions"] == 0
    assert idle.read_marker("web") is not None


def test_suspended_while_idle_counts_as_converged(world: World) -> None:
    world.sync()
    world.clock.advance(IDLE)
    world.sync()
    n = len(world.fake.executed)
    for _ in range(5):  # resyncs and events: nothing resumes it
        world.clock.advance(30)
        assert world.sync() is None
    assert len(world.fake.executed) == n and world.phase() is Phase.SUSPENDED
    assert world.log.events("web").count("idle-asleep") == 1
    # A controller that restarts keeps it asleep (the marker is on disk).
    world.ctl = world.controller()
    assert world.sync() is None
    assert not world.fake.vm("web").qemu_alive


@pytest.mark.parametrize("activity", [idle.Activity(1, 0), idle.Activity(0, 2), None])
def test_an_instance_in_use_is_never_suspended(
        world: World, activity: idle.Activity | None) -> None:
    """An ssh session, a forwarded connection, or activity that cannot be measured."""
    world.sync()
    world.activity = activity
    for _ in range(4):
        world.clock.advance(IDLE)
        world.sync()
    assert world.suspends() == 0 and world.fake.vm("web").qemu_alive
    # Once unused, the idle time starts from then, not from the boot.
    world.activity = idle.Activity(0, 0)
    assert world.sync() == pytest.approx(IDLE)
    world.clock.advance(IDLE - 1)
    world.sync()
    assert world.suspends() == 0
    world.clock.advance(1)
    world.sync()
    assert world.suspends() == 1


def _wake(world: World) -> None:
    """As `limactl shell` does: resume the suspended instance outside the controller."""
    from lima.controller.reconcile import reconcile_until
    from lima.states.model import DesiredState, RunState

    st = StatusStore().load("web")
    assert st is not None and st.generation
    desired = DesiredState(object(), st.generation, RunState.RUNNING)  # type: ignore[arg-type]
    reconcile_until("web", desired, world.fake, StatusStore(), world.clock, timeout=60)


def test_a_woken_instance_runs_until_it_is_idle_again(world: World) -> None:
    world.sync()
    world.clock.advance(IDLE)
    world.sync()
    _wake(world)
    assert world.fake.vm("web").qemu_alive
    world.activity = idle.Activity(1, 0)  # the shell's session
    world.clock.advance(IDLE * 2)
    world.sync()
    assert world.fake.vm("web").qemu_alive and world.phase() is Phase.RUNNING
    assert "idle-woken" in world.log.events("web")
    assert idle.read_marker("web") is None
    world.activity = idle.Activity(0, 0)  # the session ended
    world.sync()
    world.clock.advance(IDLE)
    world.sync()
    assert world.suspends() == 2 and world.phase() is Phase.SUSPENDED


def test_a_new_file_version_wakes_a_sleeping_instance(world: World) -> None:
    world.sync()
    world.clock.advance(IDLE)
    world.sync()
    world.write(TINY + "# changed\n")
    world.sync()
    assert world.fake.vm("web").qemu_alive and world.phase() is Phase.RUNNING
    assert "idle-woken" in world.log.events("web")
    assert idle.read_marker("web") is None


def test_without_the_option_nothing_is_suspended(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.ctl = FolderController(Options(w.folder), driver=lambda name: w.fake, clock=w.clock,
                             decisions=w.log, activity=lambda name: idle.Activity(0, 0))
    w.write()
    assert w.sync() is None
    w.clock.advance(IDLE * 10)
    assert w.sync() is None
    assert w.suspends() == 0 and not any(isinstance(a, ResumeInstance)
                                         for a in w.fake.executed)



def test_many_sleeps_and_wakes_of_one_file_version_never_stall(world: World) -> None:
    from lima.controller.reconcile import MAX_REPEATS

    world.sync()
    for _ in range(MAX_REPEATS + 2):
        world.clock.advance(IDLE)
        world.sync()
        assert world.phase() is Phase.SUSPENDED
        _wake(world)
        world.sync()
        assert world.phase() is Phase.RUNNING
    assert world.suspends() == MAX_REPEATS + 2
    assert "Stalled" not in [r.get("decision") for r in world.log.records or ()]


def test_the_flag_takes_a_go_duration(tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    from tests.component.cli import run_cli

    folder = tmp_path / "vms"
    folder.mkdir()
    code, out, _ = run_cli(["controller", "--print-systemd-unit", "--suspend-idle", "90m",
                            str(folder)], capfd)
    assert code == 0 and "--suspend-idle=1h30m0s" in out
    code, out, _ = run_cli(["controller", "--print-systemd-unit", str(folder)], capfd)
    assert code == 0 and "--suspend-idle" not in out  # off by default
    code, _, err = run_cli(["controller", "--suspend-idle", "soon", str(folder)], capfd)
    assert code == 1 and 'invalid argument "soon" for "--suspend-idle" flag' in err
