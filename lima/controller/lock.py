"""One lock per instance, so two limactl processes never drive the same instance at once.

Verbs and the controller take `instance_lock(name)` around their reconcile calls. The lock
is an flock on `$LIMA_HOME/_locks/NAME.lock`, not a file in the instance directory: at
create time that directory does not exist yet, and delete removes it while the lock is held.
(`_locks` starts with `_`, so it is never mistaken for an instance.) The holder writes its
PID and command line into the file, so a second process can say who is in the way. The
kernel drops an flock when its process dies: a crashed holder never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lima import paths
from lima.errors import BusyError

POLL = 0.05


def lock_path(name: str) -> Path:
    return paths.lima_home() / "_locks" / f"{name}.lock"


def holder(name: str) -> str:
    """'PID N (command)' as the current holder wrote it, or '' when unknown."""
    try:
        text = lock_path(name).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    pid, _, cmd = text.partition(" ")
    if not pid.isdigit():
        return ""
    return f"PID {pid} ({cmd})" if cmd else f"PID {pid}"


@contextmanager
def instance_lock(
    name: str, *, wait: bool = True, timeout: float | None = None
) -> Iterator[None]:
    """Hold instance `name`'s lock for the `with` block.

    wait=False: raise BusyError at once when another process (or another open of the file in
    this process) holds it. wait=True: poll until it is free, or until `timeout` seconds,
    then raise BusyError. The message names the holder.
    """
    p = lock_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    # No O_TRUNC: the current holder's line must survive until we own the lock.
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    who = holder(name) or "another process"
                    waited = "" if not wait else f" (waited {timeout:.0f} s)"
                    raise BusyError(
                        f"instance {name!r} is busy: {who} is working on it{waited}; "
                        "try again when it is done"
                    ) from None
                time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_command()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the kernel releases the flock itself when fd closes
    finally:
        os.close(fd)


def _command() -> str:
    return " ".join([os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]])
