"""Timers of the folder controller: when each instance is next due, and the periodic resync.

`lima.controller.queue.WorkQueue` keeps one `Timers` of instance names: a file event asks
for a pass after a short settle delay, a pass that ended in `Wait(until)` asks for one at
`until`, a busy lock for one a little later. An instance is due at most once (the earliest
request wins, so a later backoff never postpones a file event). `Ticker` calls a function
every N seconds (the resync of every known instance) until stopped. Times are monotonic
seconds; nothing here sleeps except `Ticker`'s thread, on an Event that stop() sets.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Timers:
    """name -> due time, with a heap for the earliest. Not thread-safe: the queue locks it."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._first: dict[str, float] = {}  # when the pending request was first made
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __contains__(self, name: object) -> bool:
        return name in self._due

    def __len__(self) -> int:
        return len(self._due)

    def due(self, name: str) -> float | None:
        return self._due.get(name)

    def request(self, name: str, at: float, *, settle_cap: float | None = None) -> None:
        """Make `name` due at `at`, or earlier when it already is.

        `settle_cap`: a file event; each new one pushes the pending due time to `at` (files
        are written in pieces), but never more than `settle_cap` s past the first pending
        due time (a file rewritten without pause is still acted on)."""
        old = self._due.get(name)
        if old is None:
            new = at
            self._first[name] = at
        elif settle_cap is not None:
            new = max(old, min(at, self._first[name] + settle_cap))
        else:
            new = min(old, at)
        if new != old:
            self._due[name] = new
            heapq.heappush(self._heap, (new, next(self._seq), name))

    def discard(self, name: str) -> None:
        self._due.pop(name, None)
        self._first.pop(name, None)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, skip: set[str] | frozenset[str] = frozenset()) -> str | None:
        """The earliest name due at `now` that is not in `skip` (removed), or None."""
        self._drop_stale()
        held: list[tuple[float, int, str]] = []
        found = None
        while self._heap and self._heap[0][0] <= now:
            item = heapq.heappop(self._heap)
            if self._due.get(item[2]) != item[0]:
                continue  # superseded by a later request
            if item[2] in skip:
                held.append(item)
                continue
            found = item[2]
            self.discard(found)
            break
        for item in held:
            heapq.heappush(self._heap, item)
        return found

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)


class Ticker:
    """Calls `fn()` every `interval` seconds on its own thread until `stop()`."""

    def __init__(self, interval: float, fn: Callable[[], None], name: str = "resync") -> None:
        self.interval = interval
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._fn()
            except Exception:  # a resync that fails must not end the resyncs
                log.exception("periodic resync failed")
