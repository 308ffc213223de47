"""The controller's work queue: one pass per instance at a time, requests for a pending or
running instance coalesce, at most N passes at once; the timers behind it."""

from __future__ import annotations

import threading
import time

from lima.controller.queue import WorkQueue
from lima.controller.schedule import Timers


class Recorder:
    """A handler that records passes and concurrency, and can hold passes until released."""

    def __init__(self, hold: bool = False) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.active: dict[str, int] = {}
        self.max_total = 0
        self.max_same = 0
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        if not hold:
            self.release.set()

    def __call__(self, name: str) -> float | None:
        with self.lock:
            self.calls.append(name)
            self.active[name] = self.active.get(name, 0) + 1
            self.max_same = max(self.max_same, self.active[name])
            self.max_total = max(self.max_total, sum(self.active.values()))
        self.entered.release()
        self.release.wait(10)
        with self.lock:
            self.active[name] -= 1
            if not self.active[name]:
                del self.active[name]
        return None


def test_requests_while_running_coalesce_into_one_more_pass() -> None:
    rec = Recorder(hold=True)
    q = WorkQueue(rec, workers=4)
    q.start()
    try:
        q.add("web")
        assert rec.entered.acquire(timeout=5)
        for _ in range(20):  # an editor save, a git pull, host agent events...
            q.add("web")
        assert q.running() == {"web"}
        rec.release.set()
        assert q.drain(10)
    finally:
        q.stop()
        q.join(5)
    assert rec.calls == ["web", "web"]  # never two at once, and the 20 requests made one
    assert rec.max_same == 1


def test_at_most_n_passes_at_once_over_all_instances() -> None:
    rec = Recorder(hold=True)
    q = WorkQueue(rec, workers=3)
    q.start()
    try:
        for i in range(8):
            q.add(f"vm{i}")
        for _ in range(3):
            assert rec.entered.acquire(timeout=5)
        assert not rec.entered.acquire(timeout=0.2)  # the 4th waits for a free worker
        assert len(q.running()) == 3
        rec.release.set()
        assert q.drain(10)
    finally:
        q.stop()
        q.join(5)
    assert sorted(rec.calls) == [f"vm{i}" for i in range(8)]
    assert rec.max_total == 3


def test_settling_file_events_make_one_pass() -> None:
    rec = Recorder()
    q = WorkQueue(rec, workers=2)
    q.start()
    try:
        for _ in range(10):
            q.add("db", 0.2, settle_cap=1.0)
            time.sleep(0.01)
        assert q.drain(5)
    finally:
        q.stop()
        q.join(5)
    assert rec.calls == ["db"]


def test_a_pass_asks_to_come_back_later() -> None:
    calls: list[float] = []

    def handler(name: str) -> float | None:
        calls.append(time.monotonic())
        return 0.15 if len(calls) == 1 else None

    q = WorkQueue(handler, workers=1)
    q.start()
    try:
        q.add("x")
        assert q.drain(5, horizon=1.0)
    finally:
        q.stop()
        q.join(5)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.14


def test_timers_earliest_wins_and_settle_is_capped() -> None:
    t = Timers()
    t.request("a", 10.0)
    t.request("a", 5.0)
    t.request("a", 20.0)  # a later backoff never postpones an earlier request
    assert t.due("a") == 5.0
    t.request("b", 1.0, settle_cap=0.5)
    t.request("b", 1.2, settle_cap=0.5)  # another write: pushed back...
    assert t.due("b") == 1.2
    t.request("b", 9.0, settle_cap=0.5)  # ...but never past first + cap
    assert t.due("b") == 1.5
    assert t.pop_due(4.0) == "b"
    assert t.pop_due(4.0) is None
    assert t.pop_due(5.0) == "a" and len(t) == 0


def test_a_failing_handler_does_not_kill_its_worker() -> None:
    seen: list[str] = []

    def handler(name: str) -> float | None:
        seen.append(name)
        if name == "bad":
            raise RuntimeError("bug")
        return None

    q = WorkQueue(handler, workers=1)
    q.start()
    try:
        q.add("bad")
        q.add("good", 0.05)
        assert q.drain(5)
    finally:
        q.stop()
        q.join(5)
    assert seen == ["bad", "good"]
    assert q.pending("bad") is not None  # retried later (ERROR_DELAY)
