"""Time for the reconciler, injected: `SystemClock` for real runs, `FakeClock` for tests.

`lima.controller.reconcile` reads `now()` for every decision and waits between passes with
`wait()`; the folder controller (`lima.controller.folder`) shares that one sleep, so a new
file event or a shutdown wakes a waiting instance at once (kopf's `sleep(wakeup=...)`).
status.json stores absolute times, so `now()` is wall-clock time (epoch seconds).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, seconds: float, wakeup: threading.Event | None = None) -> bool:
        """Sleep up to `seconds`; True at once when `wakeup` is (or becomes) set."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, seconds: float, wakeup: threading.Event | None = None) -> bool:
        if wakeup is None:
            self.sleep(seconds)
            return False
        return wakeup.wait(max(0.0, seconds))


class FakeClock:
    """Time that moves only when someone sleeps (or `advance()`s): tests never wait."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self._now += seconds

    def wait(self, seconds: float, wakeup: threading.Event | None = None) -> bool:
        # A set wakeup ends the wait before any fake time passes; else the whole wait
        # passes through sleep(), so subclasses that hook sleep() still see it.
        if wakeup is not None and wakeup.is_set():
            return True
        self.sleep(seconds)
        return wakeup is not None and wakeup.is_set()

    def advance(self, seconds: float) -> None:
        self._now += seconds
