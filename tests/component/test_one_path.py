"""Every verb drives an instance through the same reconcile pass under the same lock, and
the lock is held per pass: between two passes another verb or a controller worker can
take it. `converge` (lima.commands.lifecycle) runs against the FakeDriver on a FakeClock
in a private LIMA_HOME, with the real instance lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lima import paths
from lima.commands.instances import _delete_one, create_from_locator
from lima.commands.lifecycle import converge, stop_instance
from lima.controller import lock
from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.lock import held_here, holder, instance_lock
from lima.drivers import store
from lima.errors import BusyError, LimaError
from lima.states.actions import Action, CreateInstance, Outcome, StopInstance, WaitSSH
from lima.states.model import DesiredState

SPEC: Any = object()


def free_from_another_thread(name: str) -> bool:
    """Whether another thread of this process can take `name`'s lock right now."""
    got: list[bool] = []

    def take() -> None:
        try:
            with instance_lock(name, wait=False, purpose="test thread"):
                got.append(True)
        except Exception:  # BusyError: held
            got.append(False)

    t = threading.Thread(target=take)
    t.start()
    t.join(10)
    return got == [True]


class Watching(FakeClock):
    """Records, at every wait between passes, whether the lock was free."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.free_during_waits: list[bool] = []

    def wait(self, seconds: float, wakeup: threading.Event | None = None) -> bool:
        # The reconciler waits through wait(); the fake driver's steps use sleep().
        self.free_during_waits.append(
            held_here(self.name) == "" and holder(self.name) == ""
            and free_from_another_thread(self.name))
        return super().wait(seconds, wakeup)


class HeldDuringSteps(FakeDriver):
    """Records, at every step, whether this thread held the lock."""

    def __init__(self, clock: FakeClock, **kw: Any) -> None:
        super().__init__(clock, **kw)
        self.held: list[bool] = []

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        self.held.append(held_here(name) != "" and holder(name) != "")
        return super().execute(name, action, desired)


def test_lock_is_held_per_pass_not_between(_isolated_home: Path) -> None:
    clock = Watching("vm")
    driver = HeldDuringSteps(clock, ssh_flakes=2)  # two failed WaitSSH: two backoff waits
    actions = converge("vm", "running", spec=SPEC, generation="g1", driver=driver,
                       clock=clock)
    assert actions.count("WaitSSH") == 3
    assert len(clock.free_during_waits) >= 2
    assert all(clock.free_during_waits), clock.free_during_waits
    assert driver.held and all(driver.held)
    assert held_here("vm") == "" and free_from_another_thread("vm")  # released at the end


def test_a_verb_waiting_for_a_busy_lock_says_who_holds_it(_isolated_home: Path) -> None:
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("vm", wait=False, purpose="limactl controller /srv/vms"):
            taken.set()
            done.wait(30)

    t = threading.Thread(target=hold, name="worker-1")
    t.start()
    try:
        assert taken.wait(10)
        clock = FakeClock()
        driver = FakeDriver(clock)
        try:
            converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock,
                     lock_timeout=0.3)
        except BusyError as exc:
            msg = str(exc)
        else:
            raise AssertionError("converge ran under a held lock")
    finally:
        done.set()
        t.join(10)
    assert msg == ("instance 'vm' is busy: thread worker-1 of this process (limactl controller"
                   " /srv/vms) is working on it (waited 0 s); try again when it is done")
    assert driver.executed == []


class LongStep(FakeDriver):
    """The first WaitSSH blocks (real time) until `release` is set: a long step that holds
    the lock while another verb arrives."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.in_step, self.release = threading.Event(), threading.Event()

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        if isinstance(action, WaitSSH) and not self.in_step.is_set():
            self.in_step.set()
            assert self.release.wait(30)
        return super().execute(name, action, desired)


def test_stop_f_during_an_apply_is_served_after_the_current_step(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    driver = LongStep(clock)
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock)
        except BaseException as exc:  # what the apply ends with
            errors.append(exc)

    t = threading.Thread(target=apply, name="apply")
    t.start()
    try:
        assert driver.in_step.wait(10)
        assert not free_from_another_thread("vm")  # the step runs under the lock
        # The stop comes from "another process": its request carries another PID.
        monkeypatch.setattr(lock.os, "getpid", lambda: 4242)
        timer = threading.Timer(0.3, driver.release.set)
        timer.start()
        stop_instance("vm", force=True, timeout=60, driver=driver, clock=clock)
    finally:
        driver.release.set()
        t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], LimaError)
    assert str(errors[0]) == ("instance vm was stopped by `limactl stop -f` (PID 4242) while "
                              "this apply ran")
    kinds = [type(a).__name__ for a in driver.executed]
    # The apply's step ended, then the stop's kill came next: nothing of the apply after it.
    assert kinds[kinds.index("WaitSSH"):] == ["WaitSSH", "StopInstance"]
    assert driver.executed[-1] == StopInstance(force=True)
    assert not driver.vm("vm").qemu_alive


def test_stop_without_force_asks_for_a_clean_shutdown(_isolated_home: Path) -> None:
    clock = FakeClock()
    driver = FakeDriver(clock)
    converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock)
    stop_instance("vm", force=False, driver=driver, clock=clock)
    assert driver.executed[-1] == StopInstance(force=False)
    stop_instance("vm", force=True, driver=driver, clock=clock)  # already down: nothing
    assert driver.executed[-1] == StopInstance(force=False)
    converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock)
    stop_instance("vm", force=True, driver=driver, clock=clock)
    assert driver.executed[-1] == StopInstance(force=True)
    assert not driver.vm("vm").qemu_alive


def _running_instance(clock: FakeClock) -> FakeDriver:
    """A booted fake instance whose directory holds a lima.yaml, as `delete` wants."""
    driver = FakeDriver(clock)
    converge("vm", "running", spec=SPEC, generation="g1", driver=driver, clock=clock)
    (paths.instance_dir("vm") / paths.LIMA_YAML).write_text("images: []\n")
    return driver


@pytest.mark.parametrize("running", [True, False])
def test_delete_goes_through_the_reconciler(
    running: bool, _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    driver = _running_instance(clock)
    if not running:
        stop_instance("vm", force=False, driver=driver, clock=clock)
    seen: list[str] = []
    real = store.delete_instance_dir

    def delete_dir(inst: Path) -> None:
        seen.append(f"DeleteInstance held={held_here('vm') != ''}")
        real(inst)

    monkeypatch.setattr(store, "delete_instance_dir", delete_dir)
    before = len(driver.executed)
    _delete_one("vm", force=running, driver=driver)
    stops = driver.executed[before:]
    assert stops == ([StopInstance(force=True)] if running else [])
    assert seen == ["DeleteInstance held=True"]  # the safe delete, under the lock
    assert not paths.instance_dir("vm").exists()
    req = lock.read_request("vm")
    assert req is not None and req.run_state == "absent"
    assert req.command == ("limactl delete -f" if running else "limactl delete")


def test_create_goes_through_the_reconciler(_isolated_home: Path) -> None:
    clock = FakeClock()
    driver = FakeDriver(clock)
    inst = create_from_locator("template:tiny", "vm", None, driver=driver)
    assert inst == paths.instance_dir("vm") and inst.is_dir()
    assert driver.executed == [CreateInstance()]  # created, not started
    req = lock.read_request("vm")
    assert req is not None and (req.run_state, req.command) == ("stopped", "limactl create")
    with pytest.raises(LimaError, match=r"^instance 'vm' already exists"):
        create_from_locator("template:tiny", "vm", None, driver=driver)
    assert driver.executed == [CreateInstance()]


def test_a_failed_create_is_not_retried_and_leaves_nothing(_isolated_home: Path) -> None:
    clock = FakeClock()
    driver = FakeDriver(clock, digest_mismatch=True)
    with pytest.raises(LimaError) as exc:
        create_from_locator("template:tiny", "vm", None, driver=driver)
    assert str(exc.value) == "basedisk: sha256 digest mismatch (image changed?)"
    assert driver.executed == [CreateInstance()]
    assert clock.slept == []  # no backoff waited out
    assert not paths.instance_dir("vm").exists()


def test_create_of_a_busy_name_says_who_holds_it(_isolated_home: Path) -> None:
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("vm", wait=False, purpose="limactl apply vm.yaml"):
            taken.set()
            done.wait(30)

    t = threading.Thread(target=hold, name="other")
    t.start()
    try:
        assert taken.wait(10)
        driver = FakeDriver(FakeClock())
        with pytest.raises(BusyError, match=r"thread other of this process \(limactl apply"):
            create_from_locator("template:tiny", "vm", None, driver=driver)
    finally:
        done.set()
        t.join(10)
    assert driver.executed == [] and not paths.instance_dir("vm").exists()


def test_a_holder_hung_beyond_a_step_does_not_keep_stop_f_from_killing(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lima.commands import lifecycle

    killed: list[str] = []
    monkeypatch.setattr(lifecycle, "FORCE_LOCK_WAIT", 0.2)
    monkeypatch.setattr(lifecycle, "kill_vm", killed.append)
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("vm", wait=False, purpose="limactl apply hung.yaml"):
            taken.set()
            done.wait(30)

    t = threading.Thread(target=hold, name="hung")
    t.start()
    try:
        assert taken.wait(10)
        driver = FakeDriver(FakeClock())
        with pytest.raises(BusyError):  # a plain stop waits its timeout, then gives up
            stop_instance("vm", force=False, timeout=0.2, driver=driver)
        assert killed == []
        stop_instance("vm", force=True, driver=driver)
    finally:
        done.set()
        t.join(10)
    assert killed == ["vm"] and driver.executed == []
    err = capsys.readouterr().err
    assert "thread hung of this process (limactl apply hung.yaml)" in err
    assert "killing the VM without the lock" in err
