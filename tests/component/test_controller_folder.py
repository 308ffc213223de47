"""One controller pass per instance (`FolderController.sync`) over the fake driver and a
fake clock: files dropped, broken, changed and removed; pause; backoff kept on disk across
a controller crash and reset by a new file version. No threads, no sleeps."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest

from lima import paths, schemas
from lima.controller import managed
from lima.controller.clock import FakeClock
from lima.controller.driver import Driver
from lima.controller.fake import FakeDriver
from lima.controller.folder import DecisionLog, FolderController, Options
from lima.controller.lock import instance_lock
from lima.controller.status_store import StatusStore
from lima.states.phases import Phase

TINY = "base: template:tiny\n"


class World:
    """A folder, a fake driver on a fake clock, and controllers over them."""

    def __init__(self, tmp: Path, **opts: object) -> None:
        self.folder = tmp / "vms"
        self.folder.mkdir()
        self.clock = FakeClock()
        self.fake = FakeDriver(self.clock)
        self.opts = opts
        self.ctl = self.controller()

    def controller(self, **opts: object) -> FolderController:
        def factory(name: str) -> Driver:
            return self.fake

        merged = {**self.opts, **opts}
        self.log = DecisionLog(io.StringIO(), keep=True)
        ctl = FolderController(Options(self.folder, **merged),  # type: ignore[arg-type]
                               driver=factory, clock=self.clock, decisions=self.log)
        ctl.scan()
        return ctl

    def write(self, name: str, text: str = TINY) -> Path:
        p = self.folder / f"{name}.yaml"
        p.write_text(text)
        self.ctl.scan()
        return p

    def converge(self, name: str, limit: int = 50) -> float | None:
        """Passes until the controller stops asking for an immediate one."""
        for _ in range(limit):
            delay = self.ctl.sync(name)
            if delay is not None and delay < 1e-3:  # float rounding of a passed backoff
                self.clock.advance(delay)
                continue
            return delay
        raise AssertionError("no convergence")

    def status(self, name: str) -> object:
        return StatusStore().load(name)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_dropped_file_comes_up_running_and_is_owned(world: World) -> None:
    path = world.write("web")
    assert world.converge("web") is None  # Done: the next event or resync decides
    assert world.fake.vm("web").qemu_alive and world.fake.vm("web").boots == 1
    st = StatusStore().load("web")
    assert st is not None and st.phase is Phase.RUNNING
    owner = managed.ownership("web")
    assert owner is not None and owner.managed_by == f"controller:{world.folder}"
    assert owner.file == str(path)
    # An idle resync does nothing and logs nothing.
    n, logged = len(world.fake.executed), len(world.log.events())
    assert world.ctl.sync("web") is None
    assert len(world.fake.executed) == n and len(world.log.events()) == logged


def test_an_invalid_version_is_reported_once_and_the_vm_left_alone(world: World) -> None:
    world.write("web")
    world.converge("web")
    n = len(world.fake.executed)
    world.write("web", TINY + "cpus: -1\n")
    for _ in range(5):  # events and resyncs keep coming
        assert world.ctl.sync("web") is None
    invalid = [r for r in world.log.records or () if r["event"] == "invalid"]
    assert len(invalid) == 1
    problem = invalid[0]["problems"][0]
    assert problem["field"] == "cpus" and problem["line"] == 2
    assert problem["file"].endswith("web.yaml")
    assert len(world.fake.executed) == n and world.fake.vm("web").qemu_alive
    world.write("web", TINY + "cpus: -2\n")  # another bad version: reported again
    world.ctl.sync("web")
    assert world.log.events("web").count("invalid") == 2


# A changed spec goes through the plan: tests/component/test_controller_plan.py.


@pytest.mark.parametrize(("policy", "alive", "exists"), [
    ("stop", False, True), ("delete", False, False), ("none", True, True)])
def test_a_removed_file_is_pruned_by_policy(
    tmp_path: Path, policy: str, alive: bool, exists: bool
) -> None:
    world = World(tmp_path, prune=policy)
    path = world.write("web")
    world.converge("web")
    path.unlink()
    world.ctl.scan()
    assert world.converge("web") is None
    assert world.fake.vm("web").qemu_alive is alive
    assert (Path(managed.paths.lima_home()) / "web").is_dir() is exists
    assert managed.ownership("web") is None  # no longer managed
    assert ("pruned" if policy != "none" else "released") in world.log.events("web")
    world.ctl.sync("web")  # nothing more happens to it
    assert world.fake.vm("web").qemu_alive is alive


def test_an_instance_no_file_ever_named_is_never_pruned(world: World) -> None:
    world.fake.vm("other").qemu_alive = world.fake.vm("other").agent_alive = True
    assert world.ctl.sync("other") is None
    assert world.fake.vm("other").qemu_alive and not world.fake.executed


def test_paused_instances_are_left_alone_until_resumed(world: World) -> None:
    world.write("web")
    world.converge("web")
    (world.folder / "web.yaml").unlink()
    world.ctl.scan()
    managed.pause("web")
    for _ in range(3):
        assert world.ctl.sync("web") is None
    assert world.fake.vm("web").qemu_alive  # not pruned while paused
    assert world.log.events("web").count("paused") == 1
    assert managed.resume("web")
    world.converge("web")
    assert not world.fake.vm("web").qemu_alive
    assert "resumed" in world.log.events("web")


def test_a_busy_lock_requeues_instead_of_blocking(world: World) -> None:
    world.write("web")
    import threading

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("web", wait=False, purpose="limactl apply"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        assert world.ctl.sync("web") == world.ctl.opts.busy_delay
    finally:
        release.set()
        t.join()
    busy = [r for r in world.log.records or () if r["event"] == "busy"]
    assert busy and "limactl apply" in busy[0]["holder"]
    assert not world.fake.executed


def _crash_delays(world: World, name: str, crashes: int) -> list[float]:
    """Let qemu die `crashes` times; the delay the controller asks for after each."""
    delays = []
    for _ in range(crashes):
        world.fake.kill_qemu(name)
        delay = world.converge(name)
        assert delay is not None and delay > 0
        delays.append(delay)
        world.clock.advance(delay)
        world.converge(name)  # the backoff passed: boots again
        assert world.fake.vm(name).qemu_alive
    return delays


def test_crash_loop_backoff_grows_to_the_cap_and_is_counted(world: World) -> None:
    world.write("web")
    world.converge("web")
    delays = _crash_delays(world, "web", 7)
    assert all(b >= a * 1.2 for a, b in itertools.pairwise(delays[:5]))
    assert 240 <= delays[-1] <= 300  # CRASH_BACKOFF_CAP
    st = StatusStore().load("web")
    assert st is not None and st.restarts == 7
    # A new file version starts the count again: its first crash waits the first delay.
    world.write("web", TINY + "# fixed?\n")
    world.converge("web")
    assert world.fake.vm("web").qemu_alive
    [delay] = _crash_delays(world, "web", 1)
    assert delay < min(delays[2:])  # (the jitter differs: it is seeded by the boot's IID)
    st = StatusStore().load("web")
    assert st is not None and st.restarts == 1


def test_backoff_survives_a_controller_crash_and_a_new_version_resets_it(
    world: World,
) -> None:
    world.write("web")
    world.converge("web")
    world.fake.kill_qemu("web")
    first = world.converge("web")
    assert first is not None and first > 5
    # The controller is killed; a new one reads the same facts and keeps the backoff.
    world.ctl = world.controller()
    again = world.converge("web")
    assert again is not None and abs(again - first) < 1e-6
    assert not world.fake.vm("web").qemu_alive
    # A new version of the file is worth trying at once.
    world.write("web", TINY + "# touched\n")
    world.converge("web")
    assert world.fake.vm("web").qemu_alive


def test_two_files_naming_one_instance_are_a_conflict(world: World) -> None:
    world.write("web")
    (world.folder / "Web.yaml").write_text(TINY)
    world.ctl.scan()
    assert world.ctl.sync("web") is None and world.ctl.sync("web") is None
    assert world.log.events("web").count("conflict") == 1
    assert not world.fake.executed


def test_the_instance_name_is_limas_name_for_the_file(world: World) -> None:
    assert schemas.name_from_locator(str(world.folder / "Db-1.yaml")) == "db-1"
    world.write("Db-1")
    world.converge("db-1")
    assert world.fake.vm("db-1").qemu_alive


def test_a_failed_create_keeps_its_status_across_a_controller_restart(world: World) -> None:
    """No instance directory to hold status.json: the status (Stalled, the failure) is kept
    under _controller/, so a new controller does not retry a permanent failure until the
    file changes; once created, the instance's own status.json takes over."""
    world.fake.digest_mismatch = True
    world.write("web")
    assert world.converge("web") is None
    kept = StatusStore(dirless=True)
    dirless = kept.dirless_path("web")
    assert not paths.instance_dir("web").exists()  # a failed create leaves nothing
    st = kept.load("web")
    assert dirless.is_file() and st is not None and st.stalled
    assert "digest mismatch" in (st.last_error or "")
    creates = sum(type(a).__name__ == "CreateInstance" for a in world.fake.executed)
    world.ctl = world.controller()  # a restarted controller: nothing in memory
    for _ in range(3):
        world.ctl.sync("web")
    assert sum(type(a).__name__ == "CreateInstance" for a in world.fake.executed) == creates
    world.fake.digest_mismatch = False
    world.write("web", TINY + "# a new version\n")
    world.converge("web")
    assert world.fake.vm("web").qemu_alive
    assert not dirless.exists()
    own = StatusStore().load("web")
    assert own is not None and own.phase is Phase.RUNNING and not own.stalled
