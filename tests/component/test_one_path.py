"""Every verb drives an instance through the same reconcile pass under the same lock, and
the lock is held per pass: between two passes another verb or a controller worker can
take it. `converge` (lima.commands.lifecycle) runs against the FakeDriver on a FakeClock
in a private LIMA_HOME, with the real instance lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lima.commands.lifecycle import converge
from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.controller.lock import held_here, holder, instance_lock
from lima.errors import BusyError
from lima.states.actions import Action, Outcome
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
