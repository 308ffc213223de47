"""The instance lock inside one long-running process: reentrant for the holding thread,
never blocking another thread with wait=False, and naming who holds it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lima.controller.clock import FakeClock, SystemClock
from lima.controller.lock import held_here, holder, instance_lock
from lima.errors import BusyError


def test_the_holding_thread_may_take_it_again(_isolated_home: Path) -> None:
    with instance_lock("r", wait=False, purpose="controller pass"):
        with instance_lock("r", wait=False):  # a helper that locks again
            assert holder("r") == f"PID {os.getpid()} (controller pass)"
        # Leaving the inner block keeps the lock: another thread is still refused.
        refused: list[str] = []
        t = threading.Thread(target=lambda: _try(refused))
        t.start()
        t.join()
        assert refused and "controller pass" in refused[0]
    assert held_here("r") == ""
    assert holder("r") == ""


def _try(out: list[str]) -> None:
    try:
        with instance_lock("r", wait=False):
            out.append("got it")
    except BusyError as e:
        out.append(str(e))


def test_another_thread_is_refused_at_once_not_blocked(_isolated_home: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("b", wait=False, purpose="worker-1"):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold, name="worker-1")
    t.start()
    assert entered.wait(5)
    try:
        assert "worker-1" in held_here("b")
        with pytest.raises(BusyError, match="worker-1"), instance_lock("b", wait=False):
            pass
    finally:
        release.set()
        t.join()
    with instance_lock("b", wait=False):  # free again once the holder left
        pass


def test_fake_clock_wait_is_woken_without_time_passing() -> None:
    clock = FakeClock()
    ev = threading.Event()
    t0 = clock.now()
    assert clock.wait(30.0, ev) is False and clock.now() == t0 + 30.0
    ev.set()
    assert clock.wait(30.0, ev) is True and clock.now() == t0 + 30.0


def test_system_clock_wait_returns_when_woken() -> None:
    ev = threading.Event()
    threading.Timer(0.05, ev.set).start()
    assert SystemClock().wait(30.0, ev) is True
