"""The folder controller's work queue: one serialized queue per instance, N workers.

`lima.controller.folder.FolderController` puts instance names in (`add`) from file events,
host agent events, the periodic resync and the result of each pass; worker threads take
them out and call the handler (one reconcile pass). As in kopf's per-object queues there is
no batching window: a name is either pending (in the `Timers`), running, or idle, and
- a name is never handled by two workers at once: a request for a running name only marks
  it dirty (latest wins), and it is handed out again once the running pass returns;
- requests for a pending name coalesce into one pass (see `Timers.request`);
- at most `workers` passes run at once, over all instances.
Idle workers block on one Condition (no polling). `stop()` lets running passes finish and
hands out nothing new; `drain()` waits until nothing is pending or running (tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lima.controller.schedule import Timers

log = logging.getLogger(__name__)

# A handler that raised (a bug, or an OSError nobody classified) is tried again after this.
ERROR_DELAY = 30.0

# The handler returns the seconds until the name should be handled again, or None (only
# when something asks: a file event, the resync).
Handler = Callable[[str], float | None]


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        workers: int = 4,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._handler = handler
        self._workers = workers
        self._now = monotonic
        self._cond = threading.Condition()
        self._timers = Timers()
        self._running: set[str] = set()
        self._dirty: dict[str, tuple[float, float | None]] = {}  # name -> (at, settle_cap)
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.passes = 0  # handled passes, for tests and benchmarks

    # --- producers ------------------------------------------------------------------
    def add(self, name: str, delay: float = 0.0, *, settle_cap: float | None = None) -> None:
        """Ask for a pass of `name` in `delay` s. `settle_cap`: a file event (see
        `Timers.request`): more events push it back, by at most `settle_cap` s."""
        with self._cond:
            if self._stopping:
                return
            at = self._now() + max(0.0, delay)
            if name in self._running:
                old = self._dirty.get(name)
                if old is None or at < old[0]:
                    self._dirty[name] = (at, settle_cap)
                return
            self._timers.request(name, at, settle_cap=settle_cap)
            self._cond.notify()

    def pending(self, name: str) -> float | None:
        """Seconds until `name` is due (0 when overdue), None when not pending."""
        with self._cond:
            due = self._timers.due(name)
            if due is None:
                d = self._dirty.get(name)
                due = None if d is None else d[0]
            return None if due is None else max(0.0, due - self._now())

    def running(self) -> set[str]:
        with self._cond:
            return set(self._running)

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"worker-{i + 1}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """No new passes; running ones finish (join() waits for them)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to end; False when some still run after `timeout`."""
        end = None if timeout is None else self._now() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - self._now()))
        return not any(t.is_alive() for t in self._threads)

    def drain(self, timeout: float = 10.0, *, horizon: float = 5.0) -> bool:
        """Wait until no pass runs and none is due within `horizon` s (tests, benchmarks)."""
        end = self._now() + timeout
        with self._cond:
            while True:
                nxt = self._timers.next_due()
                idle = not self._running and not self._dirty and (
                    nxt is None or nxt > self._now() + horizon)
                if idle:
                    return True
                left = end - self._now()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    # --- workers ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            name = self._take()
            if name is None:
                return
            delay: float | None
            try:
                delay = self._handler(name)
            except Exception:
                log.exception("%s: the controller's pass failed; trying again in %.0f s",
                              name, ERROR_DELAY)
                delay = ERROR_DELAY
            self._done(name, delay)

    def _take(self) -> str | None:
        with self._cond:
            while not self._stopping:
                now = self._now()
                name = self._timers.pop_due(now, skip=self._running)
                if name is not None:
                    self._running.add(name)
                    return name
                nxt = self._timers.next_due()
                # Block until something is due or someone adds work: no polling.
                self._cond.wait(None if nxt is None else max(0.0, nxt - now))
            return None

    def _done(self, name: str, delay: float | None) -> None:
        with self._cond:
            self._running.discard(name)
            self.passes += 1
            now = self._now()
            dirty = self._dirty.pop(name, None)
            if dirty is not None:
                self._timers.request(name, dirty[0], settle_cap=dirty[1])
            if delay is not None and not self._stopping:
                self._timers.request(name, now + max(0.0, delay))
            self._cond.notify_all()
