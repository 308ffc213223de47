"""One lock per instance, so two limactl processes never drive the same instance at once,
and the newest request for it, so a forced stop or delete can interrupt the holder.

Verbs and the controller take `instance_lock(name)` around their reconcile calls. The lock
is an flock on `$LIMA_HOME/_locks/NAME.lock`, not a file in the instance directory: at
create time that directory does not exist yet, and delete removes it while the lock is held.
(`_locks` starts with `_`, so it is never mistaken for an instance.) The holder writes its
PID and command line into the file, so a second process can say who is in the way. The
kernel drops an flock when its process dies: a crashed holder never leaves a stale lock.
Whoever takes the lock first removes what killed creates and deletes of that instance left
behind (`lima.drivers.store.remove_leftovers`).

`_locks` is 0700 and lock files are opened without following symlinks and checked to be
regular files of ours: LIMA_HOME may be in a shared directory, and a planted symlink must
not make limactl (perhaps root) truncate the file it points to.

`_locks/NAME.request` records the newest request for the instance (`write_request`): the
run state a verb wants, its PID and command. Verbs take the lock per reconcile pass, not
for a whole convergence, and a waiting verb polls with a short backoff: `stop` and
`delete` write their request, then wait for the lock (at most one step), and the
converging verb, which reads the request before each pass (`superseded_by`), gives up.

A long-running process (the folder controller, `lima.controller.folder`) takes the lock per
pass with `wait=False` and requeues the instance when it is busy, so no worker thread ever
blocks on it. Inside one process the lock is reentrant per thread: a per-name
`threading.Lock` registry admits one thread, which may take the same lock again (a helper
called under it) without a second flock, which would conflict with the first open of the
file. `holder()` and the in-process registry (`held_here`) say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lima import paths
from lima.drivers import safefs
from lima.errors import BusyError, LimaError
from lima.names import validate_name

log = logging.getLogger(__name__)

POLL = 0.05
MAX_POLL = 0.5  # the longest pause between two tries for a busy lock


@dataclass
class _Hold:
    """A lock this process holds: by which thread, how many times nested, for what."""

    thread: int
    thread_name: str
    depth: int
    purpose: str
    since: float


_registry = threading.Lock()  # guards the two dicts below
_threads: dict[str, threading.Lock] = {}  # one per instance name, never removed (cheap)
_holds: dict[str, _Hold] = {}
# Run states whose request interrupts another process's convergence (see superseded_by).
_INTERRUPTING = ("stopped", "absent")


def lock_path(name: str) -> Path:
    """`$LIMA_HOME/_locks/NAME.lock`, for a valid instance name only (SpecError else)."""
    validate_name(name)
    return paths.locks_dir() / f"{name}.lock"


def request_path(name: str) -> Path:
    validate_name(name)
    return paths.locks_dir() / f"{name}.request"


def holder(name: str) -> str:
    """'PID N (command)' as the current holder wrote it, or '' when unknown."""
    try:
        raw = safefs.read_private_file(lock_path(name), 4096)
    except OSError:
        return ""
    text = (raw or b"").decode("utf-8", errors="replace").strip()
    pid, _, cmd = text.partition(" ")
    if not pid.isdigit():
        return ""
    return f"PID {pid} ({cmd})" if cmd else f"PID {pid}"


def _open_lock(name: str) -> int:
    p = lock_path(name)
    safefs.ensure_owned_dir(p.parent)
    try:
        return safefs.open_private_file(p)
    except OSError as exc:
        # A read-only LIMA_HOME: an flock needs no write access, and a stop must still work.
        if exc.errno not in (errno.EROFS, errno.EACCES):
            raise
        return safefs.open_private_file(p, os.O_RDONLY, create=False)


@contextmanager
def instance_lock(
    name: str, *, wait: bool = True, timeout: float | None = None, purpose: str | None = None
) -> Iterator[None]:
    """Hold instance `name`'s lock for the `with` block.

    wait=False: raise BusyError at once when another process or another thread of this one
    holds it. wait=True: poll until it is free, or until `timeout` seconds, then raise
    BusyError. The message names the holder. The thread that holds it may take it again
    (nested blocks share the one flock). `purpose` is written as the holder's description
    (default: this process's command line). Once held, leftovers of killed creates and
    deletes of this instance are removed.
    """
    me = threading.get_ident()
    with _registry:
        hold = _holds.get(name)
        if hold is not None and hold.thread == me:
            hold.depth += 1
            reentered = True
        else:
            reentered = False
            tlock = _threads.setdefault(name, threading.Lock())
    if reentered and hold is not None:
        try:
            yield
        finally:
            with _registry:
                hold.depth -= 1
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    if not _acquire_thread_lock(tlock, wait, deadline):
        raise _busy(name, wait, timeout, _in_process_holder(name))
    try:
        with _flock(name, wait, deadline, timeout, purpose):
            with _registry:
                _holds[name] = _Hold(me, threading.current_thread().name, 1,
                                     purpose or _command(), time.time())
            try:
                _clean(name)
                yield
            finally:
                with _registry:
                    _holds.pop(name, None)
    finally:
        tlock.release()


def held_here(name: str) -> str:
    """'thread T (purpose) for N s' when a thread of this process holds `name`'s lock."""
    who = _in_process_holder(name)
    return who or ""


def _in_process_holder(name: str) -> str:
    with _registry:
        h = _holds.get(name)
        if h is None:
            return ""
        return f"thread {h.thread_name} of this process ({h.purpose})"


def _acquire_thread_lock(tlock: threading.Lock, wait: bool, deadline: float | None) -> bool:
    if not wait:
        return tlock.acquire(blocking=False)
    if deadline is None:
        return tlock.acquire()
    return tlock.acquire(timeout=max(0.0, deadline - time.monotonic()))


def _busy(name: str, wait: bool, timeout: float | None, who: str) -> BusyError:
    waited = "" if not wait or timeout is None else f" (waited {timeout:.0f} s)"
    return BusyError(
        f"instance {name!r} is busy: {who or 'another process'} is working on it{waited}; "
        "try again when it is done"
    )


@contextmanager
def _flock(
    name: str, wait: bool, deadline: float | None, timeout: float | None, purpose: str | None
) -> Iterator[None]:
    # No O_TRUNC: the current holder's line must survive until we own the lock.
    fd = _open_lock(name)
    delay = POLL / 2
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise _busy(name, wait, timeout, holder(name)) from None
                # A short backoff: the holder releases between passes, within a step.
                delay = min(delay * 2, MAX_POLL)
                if deadline is not None:
                    delay = max(0.0, min(delay, deadline - time.monotonic()))
                time.sleep(delay)
        # The holder's line is a courtesy: a full or read-only disk must not stop a stop.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {purpose or _command()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # the kernel releases the flock itself when fd closes
    finally:
        os.close(fd)


def _clean(name: str) -> None:
    # Deferred: the store pulls in the process helpers, which the lock alone does not need.
    from lima.drivers.store import remove_leftovers

    try:
        removed = remove_leftovers(name)
    except OSError as exc:  # cleaning up is a courtesy; the verb's own work comes first
        log.warning("%s: could not remove leftovers of killed commands: %s", name, exc)
        return
    for path in removed:
        log.info("%s: removed %s, left by a killed limactl", name, path)


def _command() -> str:
    return " ".join([os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]])


@dataclass(frozen=True)
class Request:
    """What a verb asked of an instance: `run_state` ("running", "stopped", "absent"),
    by which process and command, at which time (epoch seconds)."""

    run_state: str
    pid: int
    command: str
    time: float

    def to_json(self) -> dict[str, Any]:
        return {"runState": self.run_state, "pid": self.pid, "command": self.command,
                "time": self.time}

    @classmethod
    def from_json(cls, d: Any) -> Request | None:
        if not isinstance(d, dict):
            return None
        state, pid, cmd, at = (d.get(k) for k in ("runState", "pid", "command", "time"))
        if not (isinstance(state, str) and isinstance(pid, int) and isinstance(cmd, str)
                and isinstance(at, int | float)):
            return None
        return cls(state, pid, cmd, float(at))


def write_request(name: str, run_state: str, command: str) -> Request:
    """Record this process's request for `name` (atomically; a symlink there is replaced,
    never written through). Every verb calls it before acting on the instance."""
    req = Request(run_state, os.getpid(), command, time.time())
    p = request_path(name)
    safefs.ensure_owned_dir(p.parent)
    try:
        safefs.write_private_file(p, (json.dumps(req.to_json()) + "\n").encode())
    except OSError as exc:  # a full or read-only disk: no bug, and the user must act
        raise RequestNotRecorded(f"cannot write {p}: {exc.strerror or exc}", req) from None
    return req


class RequestNotRecorded(LimaError):
    """`write_request` could not write the file; `.request` is what it would have held."""

    def __init__(self, message: str, request: Request) -> None:
        super().__init__(message)
        self.request = request


def read_request(name: str) -> Request | None:
    """The newest request for `name`; None when there is none or it is unreadable (an
    unreadable request interrupts nobody)."""
    try:
        raw = safefs.read_private_file(request_path(name))
    except (OSError, safefs.UnsafeFileError) as exc:
        log.warning("%s: ignoring the request file: %s", name, exc)
        return None
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        return Request.from_json(json.loads(raw))
    return None


def superseded_by(name: str, mine: Request) -> Request | None:
    """The request that should make the holder of `mine` give up: a newer one from another
    process asking for the instance to be stopped or deleted (other than what `mine`
    asks). A newer "running" request only queues behind the lock."""
    newest = read_request(name)
    if newest is None or newest == mine or newest.pid == mine.pid:
        return None
    if newest.time < mine.time:
        # Left by a verb that came first (a `delete -f` that has finished, say): what it
        # asked is done or being done under the lock this one waits for.
        return None
    if newest.run_state in _INTERRUPTING and newest.run_state != mine.run_state:
        return newest
    return None
