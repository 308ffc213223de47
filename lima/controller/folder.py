"""FolderController: keeps every instance described by a folder of lima.yaml files converged.

`limactl controller DIR` (lima.commands.controller) builds one and calls `run()`. It wires
- `lima.controller.watch` (file events -> instance names),
- `lima.controller.queue.WorkQueue` (one serialized queue per instance, N workers),
- `lima.controller.schedule.Ticker` (the periodic resync: level-triggered, so what no event
  reports, e.g. an instance stopped by hand, is still seen),
and `sync(name)`, one worker pass for one instance: read DIR/NAME.yaml, resolve it, plan
it against what the instance applied (lima.controller.planner: the drift classes `limactl
apply` uses), take the instance lock without waiting, run one `reconcile_pass`, and say
when to come back. With `--suspend-idle` a pass that leaves an instance Running also asks
lima.controller.idle whether it has been idle long enough, and suspends it then.
Every decision is one JSON line (`DecisionLog`): on stderr, and for an
instance also in `_controller/NAME.log`, which `limactl watch` follows.

Everything that must survive a restart is on disk: status.json (retries, next attempt,
crash-loop restarts; `_controller/NAME.status.json` while a create keeps failing, so there
is no instance directory to hold it), `_controller/NAME.json` (owner and the file version last seen:
lima.controller.managed). What is kept in memory is only what keeps the log quiet (each
problem is reported once per file version) and the repeat guard. So a controller killed
at any moment is replaced by one that resumes from facts. Stopping it (`stop()`) lets the
running passes finish and never stops a VM: host agents live in their own sessions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from lima import paths, schemas
from lima.controller import idle, managed
from lima.controller.clock import Clock, SystemClock
from lima.controller.driver import Driver
from lima.controller.lock import instance_lock
from lima.controller.planner import Planner, note_applied
from lima.controller.queue import WorkQueue
from lima.controller.reconcile import Pass, RepeatGuard, reconcile_pass
from lima.controller.schedule import Ticker
from lima.controller.status_store import StatusStore
from lima.controller.watch import SUFFIX, EventRouter, FolderWatch, instance_of_file
from lima.errors import BusyError, LimaError, SpecError
from lima.states.actions import Done, Stalled, Wait
from lima.states.model import DesiredState, RunState
from lima.states.phases import Phase

log = logging.getLogger(__name__)

PRUNE_POLICIES = ("stop", "delete", "none")
RESTART_POLICIES = ("auto", "stage")
MAX_FILE = 1 << 20  # a lima.yaml larger than this is no lima.yaml


@dataclass(frozen=True)
class Options:
    folder: Path
    prune: str = "stop"
    restart: str = "auto"  # restart-class changes: one restart (auto) or staged (stage)
    workers: int = 4
    resync: float = 30.0  # seconds between passes over every known instance
    settle: float = 0.1  # a file event waits this long for the rest of the write
    settle_cap: float = 1.0  # ... but is never postponed more than this by later writes
    budget: float = 5.0  # the longest a wait step may block a worker
    busy_delay: float = 2.0  # the instance lock is held by someone else: come back then
    instance_delay: float = 0.05  # coalesces a burst of host agent events
    suspend_idle: float = 0.0  # suspend an instance idle this long (s); 0: never


class DecisionLog:
    """One JSON line per decision on `stream` (stderr) and, for a decision about an
    instance, appended to `$LIMA_HOME/_controller/NAME.log` (lima.controller.managed:
    size-capped, 0600) so `limactl watch NAME` shows it; `records` keeps them for tests.
    `files=False` writes the stream only."""

    def __init__(self, stream: TextIO | None = None, *, keep: bool = False,
                 files: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._files = files
        self._file_error = ""  # the last error writing a NAME.log, warned about once
        self.records: list[dict[str, Any]] | None = [] if keep else None

    def emit(self, name: str, event: str, **fields: Any) -> None:
        rec = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "instance": name, "event": event, **fields}
        line = json.dumps(rec, default=str)
        with self._lock:
            if self.records is not None:
                self.records.append(rec)
            self._stream.write(line + "\n")
            self._stream.flush()
            if self._files and name:
                self._append(name, line)

    def _append(self, name: str, line: str) -> None:
        # A log file that cannot be written must never stop a decision from being acted
        # on: stderr still has the line; the problem is said once, not per decision.
        try:
            managed.append_log(name, line)
        except (OSError, LimaError) as exc:
            if str(exc) != self._file_error:
                self._file_error = str(exc)
                log.warning("%s: cannot append to the controller's log: %s", name, exc)

    def events(self, name: str | None = None) -> list[str]:
        return [r["event"] for r in self.records or () if name in (None, r["instance"])]


@dataclass
class _Memory:
    """What one instance's passes remember in memory: the reports made (kind -> key, so a
    problem is logged once per file version) and the repeat guard of the file version."""

    reported: dict[str, str] = field(default_factory=dict)
    guard: RepeatGuard = field(default_factory=RepeatGuard)
    guard_key: str = ""
    previous: Any = None  # the last Status, for an instance without a directory
    resolved: tuple[tuple[object, ...], Any] | None = None  # (cache key, schemas.Resolved)
    last: tuple[str, str] = ("", "")  # (decision, phase) last logged
    decided: Any = None  # the decision of the last pass



# instance name -> the driver of one pass
DriverFactory = Callable[[str], Driver]


def qemu_driver(name: str) -> Driver:
    from lima.drivers.instance import QemuDriver  # deferred: qemu, ssh, images

    return QemuDriver()


class FolderController:
    def __init__(
        self,
        opts: Options,
        *,
        driver: DriverFactory = qemu_driver,
        clock: Clock | None = None,
        store: StatusStore | None = None,
        decisions: DecisionLog | None = None,
        activity: idle.ActivityProbe = idle.host_activity,
    ) -> None:
        if opts.prune not in PRUNE_POLICIES:
            raise ValueError(f"prune must be one of {PRUNE_POLICIES}")
        if opts.restart not in RESTART_POLICIES:
            raise ValueError(f"restart must be one of {RESTART_POLICIES}")
        self.opts = opts
        self.folder = opts.folder
        self.label = managed.owner_label(opts.folder)
        self.driver = driver
        self.clock = clock or SystemClock()
        self.store = store or StatusStore(dirless=True)
        self.decisions = decisions or DecisionLog()
        self.planner = Planner(opts.restart, self.store, self.clock.now)
        self.idle = idle.IdleWatch(opts.suspend_idle, activity) if opts.suspend_idle > 0 else None
        self.queue = WorkQueue(self.sync, opts.workers)
        self._lock = threading.Lock()
        self._index: dict[str, set[Path]] = {}
        self._owned: set[str] = set()
        self._mem: dict[str, _Memory] = {}
        self._watch: FolderWatch | None = None
        self._ticker: Ticker | None = None

    # --- wiring -----------------------------------------------------------------------
    def start(self, *, watch: bool = True) -> None:
        """Watch (unless told not to: tests feed events by hand), queue every known
        instance, start the workers and the periodic resync."""
        if watch:
            router = EventRouter(self.folder, paths.lima_home(), self.on_file, self.on_instance)
            self._watch = FolderWatch(router)
            self._watch.start()
        self.decisions.emit("", "started", folder=str(self.folder), prune=self.opts.prune,
                            workers=self.opts.workers, resync=self.opts.resync)
        self.resync()
        self.queue.start()
        if self.opts.resync > 0:
            self._ticker = Ticker(self.opts.resync, self.resync)
            self._ticker.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop watching and resyncing, let running passes finish (up to `timeout` s);
        False when some were abandoned. No VM is stopped."""
        if self._ticker is not None:
            self._ticker.stop()
        if self._watch is not None:
            self._watch.stop()
        self.queue.stop()
        finished = self.queue.join(timeout)
        self.decisions.emit("", "stopped", abandoned=sorted(self.queue.running()))
        return finished

    def scan(self) -> set[str]:
        """Rebuild the file index from DIR; the names of its instance files."""
        index: dict[str, set[Path]] = {}
        try:
            entries = list(self.folder.iterdir())
        except OSError as exc:
            self.decisions.emit("", "folder-unreadable", folder=str(self.folder),
                                error=exc.strerror or str(exc))
            entries = []
        for p in entries:
            name = instance_of_file(p)
            if name is not None and p.is_file():
                index.setdefault(name, set()).add(p)
        with self._lock:
            self._index = index
            self._owned = set(managed.owned_by(self.label))
            return set(index) | self._owned

    def resync(self) -> None:
        for name in sorted(self.scan()):
            self.queue.add(name)

    def on_file(self, name: str, path: Path) -> None:
        with self._lock:
            paths_ = self._index.setdefault(name, set())
            if path.is_file():
                paths_.add(path)
            else:
                paths_.discard(path)
        self.queue.add(name, self.opts.settle, settle_cap=self.opts.settle_cap)

    def on_instance(self, name: str) -> None:
        with self._lock:
            known = name in self._index or name in self._owned
        if known:
            self.queue.add(name, self.opts.instance_delay)

    # --- one pass -----------------------------------------------------------------------
    def sync(self, name: str) -> float | None:
        """One pass for `name`; the seconds until the next one is needed, or None (the
        next file event or resync). Never blocks on the lock; never raises LimaError."""
        mem = self._memory(name)
        if managed.is_paused(name):
            if self._once(mem, "paused", "paused"):
                self.decisions.emit(name, "paused", reason="limactl controller pause")
            return None
        if mem.reported.pop("paused", None) is not None:
            self.decisions.emit(name, "resumed")
        with self._lock:
            files = sorted(p for p in self._index.get(name, ()) if p.is_file())
        if len(files) > 1:
            if self._once(mem, "conflict", ",".join(map(str, files))):
                self.decisions.emit(name, "conflict", files=[str(p) for p in files],
                                    reason="several files name this instance; keep one")
            return None
        if not files:
            return self._prune(name, mem)
        return self._sync_file(name, files[0], mem)

    def _sync_file(self, name: str, path: Path, mem: _Memory) -> float | None:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FILE + 1)
        except OSError as exc:
            if self._once(mem, "unreadable", str(exc)):
                self.decisions.emit(name, "unreadable", file=str(path),
                                    error=exc.strerror or str(exc))
            return None
        digest = hashlib.sha256(data).hexdigest()
        owner = managed.ownership(name)
        if owner is not None and owner.managed_by != self.label:
            if self._once(mem, "foreign", owner.managed_by):
                self.decisions.emit(name, "managed-elsewhere", by=owner.managed_by,
                                    file=str(path))
            return None
        try:
            if len(data) > MAX_FILE:
                raise SpecError(f"{path}: larger than {MAX_FILE} bytes; not a lima.yaml")
            resolved = self._resolve(name, path, digest, mem)
        except LimaError as exc:
            # The instance is left exactly as it is; the next version of the file decides.
            if self._once(mem, "invalid", digest):
                self.decisions.emit(name, "invalid", file=str(path), digest=digest[:12],
                                    problems=_problems(exc, path),
                                    action="none; the instance is left as it is")
            return None
        mem.reported.pop("invalid", None)
        def report(**fields: Any) -> None:  # a plan is logged once per file version
            if self._once(mem, "plan", digest):
                self.decisions.emit(name, "plan", **fields)

        target = self.planner.plan(name, path, resolved, self.store.load(name), digest,
                                   report)
        if target is None:
            return None
        new_version = owner is None or owner.digest != digest
        record = managed.Ownership(self.label, str(path), digest)

        def after(p: Pass) -> None:
            self._record(name, owner, record)
            note_applied(name, resolved, target.desired, p)

        if target.refused and self._once(mem, "run-state", digest):
            self.decisions.emit(name, "run-state-refused", want="suspended",
                                reason=target.refused, action="kept running")
        desired = target.desired
        if self.idle is not None:
            sleep = self._asleep(name, desired, digest, mem)
            if sleep == "asleep":
                return None  # suspended while idle: converged until someone wakes it
            if sleep == "finish":
                desired = replace(desired, run_state=RunState.SUSPENDED)
        delay = self._pass(name, desired, mem, rearm=new_version,
                           key=digest, after=after, before=target.before)
        if target.then is not None and isinstance(mem.decided, Done):
            return 0.0  # up: the next pass takes it on to the file's run state
        if (self.idle is None or desired.run_state is not RunState.RUNNING or desired.restart
                or not isinstance(mem.decided, Done) or mem.previous is None
                or mem.previous.phase is not Phase.RUNNING):
            return delay
        return self._idle_check(name, desired, digest, mem, delay)

    # --- idle suspend (--suspend-idle; lima.controller.idle) ----------------------------
    def _asleep(self, name: str, desired: DesiredState, digest: str, mem: _Memory) -> str:
        """"asleep": suspended by this idle rule for this file version and still so;
        "finish": that suspend is under way; "awake": run the normal pass (the instance was
        woken, a new file version came, or no idle suspend happened)."""
        marked = idle.read_marker(name)
        if marked is None:
            return "awake"
        obs = self.driver(name).observe(name)
        if marked == digest and desired.run_state is RunState.RUNNING:
            if not obs.vm_alive and obs.saved_generation is not None:
                if self._once(mem, "asleep", digest):
                    self.decisions.emit(name, "idle-asleep", reason="suspended while idle; "
                                        "`limactl shell` or `limactl start` wakes it")
                return "asleep"
            if obs.vm_alive and not obs.resuming and (
                    obs.suspending or obs.saved_generation is not None):
                return "finish"
        why = "a new version of its file" if marked != digest else (
            "it runs again" if obs.vm_alive else "its saved state is gone")
        idle.clear_marker(name)
        assert self.idle is not None
        self.idle.reset(name)
        # Woken from outside: a new start for the repeat guard, else a long life of
        # idle suspends of one file version would read as a step repeated in vain.
        mem.guard = RepeatGuard()
        mem.reported.pop("asleep", None)
        self.decisions.emit(name, "idle-woken", why=why)
        return "awake"

    def _idle_check(self, name: str, desired: DesiredState, digest: str, mem: _Memory,
                    delay: float | None) -> float | None:
        """After a pass that left `name` Running: suspend it when it has been idle long
        enough, else come back when it would be (or at the next resync when in use)."""
        assert self.idle is not None
        now = self.clock.now()
        left = self.idle.left(name, now)
        if left is None:
            return delay
        if left > 0:
            return left if delay is None else min(delay, left)
        idle_for = self.idle.idle_for(name, now)
        act = self.idle.last
        self.decisions.emit(name, "idle-suspend", idleFor=round(idle_for, 1),
                            after=self.idle.after,
                            sessions=act.sessions if act else 0,
                            connections=act.connections if act else 0)
        self.idle.reset(name)
        # The marker first, under the lock: a suspend cut short is finished, not undone.
        return self._pass(name, replace(desired, run_state=RunState.SUSPENDED), mem,
                          rearm=False, key=digest, after=lambda p: None,
                          before=lambda: idle.write_marker(name, digest, idle_for),
                          why=f"idle for {idle_for:.0f} s (--suspend-idle)")


    def _resolve(self, name: str, path: Path, digest: str, mem: _Memory) -> schemas.Resolved:
        """schemas.resolve, skipped when neither the file nor the user's default and
        override files changed since the last pass (a resync of many instances)."""
        cfg = paths.config_dir()
        key: tuple[object, ...] = (digest, *(_mtime(cfg / f) for f in _CONFIG_FILES))
        if mem.resolved is not None and mem.resolved[0] == key:
            cached: schemas.Resolved = mem.resolved[1]
            return cached
        resolved = schemas.resolve(str(path), name=name)
        mem.resolved = (key, resolved)
        return resolved

    def _prune(self, name: str, mem: _Memory) -> float | None:
        owner = managed.ownership(name)
        if owner is None or owner.managed_by != self.label:
            self._forget(name)  # never ours: an instance DIR does not describe is left alone
            return None
        policy = self.opts.prune
        if policy == "none":
            try:
                with instance_lock(name, wait=False, purpose=self._purpose()):
                    managed.set_ownership(name, None)
            except BusyError as exc:
                self.decisions.emit(name, "busy", holder=str(exc))
                return self.opts.busy_delay
            self.decisions.emit(name, "released", file=owner.file, prune="none")
            self._forget_dirless(name)
            self._forget(name)
            return None
        status = self.store.load(name)
        run_state = RunState.STOPPED if policy == "stop" else RunState.ABSENT
        desired = DesiredState(None, (status.generation if status else None) or "", run_state)

        def release(p: Pass) -> None:
            if isinstance(p.decision, Done):
                managed.set_ownership(name, None)

        delay = self._pass(name, desired, mem, rearm=True, key="prune:" + policy,
                           after=release, why=f"{owner.file} was removed")
        if managed.ownership(name) is None:
            self.decisions.emit(name, "pruned", prune=policy, file=owner.file)
            if policy == "delete":
                managed.remove_logs(name)  # gone with the instance, as `limactl delete` does
            self._forget_dirless(name)
            self._forget(name)
        return delay

    def _forget_dirless(self, name: str) -> None:
        """A pruned instance that never got a directory: its kept status goes too."""
        if not paths.instance_dir(name).is_dir():
            self.store.forget_dirless(name)

    def _pass(
        self, name: str, desired: DesiredState, mem: _Memory, *,
        rearm: bool, key: str, after: Callable[[Pass], None], why: str = "",
        before: Callable[[], None] | None = None,
    ) -> float | None:
        driver = self.driver(name)
        if mem.guard_key != key:
            mem.guard, mem.guard_key = RepeatGuard(), key
        try:
            with instance_lock(name, wait=False, purpose=self._purpose()):
                if before is not None:
                    try:
                        before()
                    except (OSError, LimaError) as exc:
                        # Nothing was started; the same plan is tried again after a while.
                        self.decisions.emit(name, "record-failed", error=str(exc),
                                            retryIn=self.opts.busy_delay)
                        return self.opts.busy_delay
                p = reconcile_pass(name, desired, driver, self.store, self.clock,
                                   rearm_first=rearm, budget_cap=self.opts.budget,
                                   previous=mem.previous)
                p = mem.guard.check(name, p, desired, self.store, self.clock)
                after(p)
        except BusyError as exc:
            self.decisions.emit(name, "busy", holder=str(exc), retryIn=self.opts.busy_delay)
            return self.opts.busy_delay
        mem.previous, mem.decided = p.status, p.decision
        self._log_pass(name, desired, p, mem, rearm=rearm, why=why)
        return self._next(p)

    def _next(self, p: Pass) -> float | None:
        d = p.decision
        if isinstance(d, Wait):
            return max(0.0, d.until - self.clock.now())
        if isinstance(d, Done | Stalled):
            return None
        return 0.0  # a step ran: look again at once

    def _log_pass(
        self, name: str, desired: DesiredState, p: Pass, mem: _Memory, *, rearm: bool,
        why: str,
    ) -> None:
        kind = type(p.decision).__name__
        acted = p.outcome is not None
        if not acted and (kind, p.status.phase.value) == mem.last:
            return  # an idle resync that found nothing new says nothing
        mem.last = (kind, p.status.phase.value)
        fields: dict[str, Any] = {"want": desired.run_state.value,
                                  "phase": p.status.phase.value, "decision": kind}
        if isinstance(p.decision, Wait):
            fields["until"] = round(p.decision.until - self.clock.now(), 1)
            fields["reason"] = p.decision.reason
        elif isinstance(p.decision, Stalled):
            fields["reason"] = p.decision.reason
        if p.outcome is not None:
            fields["ok"] = p.outcome.ok
            if p.outcome.error:
                fields["error"] = p.outcome.error.split("\n", 1)[0]
        if p.status.restarts:
            fields["restarts"] = p.status.restarts
        if rearm:
            fields["newVersion"] = True
        if why:
            fields["why"] = why
        if p.unsaved is not None:
            fields["unsaved"] = str(p.unsaved)
        self.decisions.emit(name, "pass", **fields)

    # --- helpers ------------------------------------------------------------------------
    def _record(self, name: str, old: managed.Ownership | None, new: managed.Ownership) -> None:
        try:
            if old != new:
                managed.set_ownership(name, new)
            elif self.store.managed_by(name) != self.label:
                # status.json came after the record (or was rebuilt): say it there too.
                self.store.set_managed_by(name, self.label)
        except (OSError, LimaError) as exc:
            log.warning("%s: cannot record that this controller manages it: %s", name, exc)
            return
        if old != new:
            with self._lock:
                self._owned.add(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._owned.discard(name)
            self._mem.pop(name, None)

    def _memory(self, name: str) -> _Memory:
        with self._lock:
            return self._mem.setdefault(name, _Memory())

    @staticmethod
    def _once(mem: _Memory, kind: str, key: str) -> bool:
        """True the first time (kind, key) is seen in a row: report it then only."""
        if mem.reported.get(kind) == key:
            return False
        mem.reported[kind] = key
        return True

    def _purpose(self) -> str:
        return f"limactl controller {self.folder} ({threading.current_thread().name})"


_CONFIG_FILES = ("default.yaml", "override.yaml")



def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def _problems(exc: LimaError, path: Path) -> list[dict[str, Any]]:
    if isinstance(exc, SpecError):
        return [{"file": p.file or str(path), "line": p.line, "field": p.path,
                 "message": p.message} for p in exc.problems if not p.warning]
    return [{"file": str(path), "line": 0, "field": "", "message": str(exc)}]


def instance_files(folder: Path) -> list[Path]:
    """The instance files of `folder` (for the verb's summary), sorted."""
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if instance_of_file(p) is not None)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate` (tests and benchmarks only)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
