"""`limactl start --progress` and `--foreground`, called by lima.commands.startform.

`--progress` shows the guest's console while the start waits: the lines appended to the
instance's serial.log (kernel, systemd and cloud-init output, including the provision
scripts' own output), on stderr, until the instance is running. Lima tails the guest's
cloud-init-output.log over ssh; the console has the same lines and is there before ssh.

`--foreground` keeps `limactl start` in the foreground for as long as the instance runs,
as a service manager expects of `limactl start NAME --foreground` (the unit `limactl
autostart enable` writes): it returns when the VM stops, and SIGTERM or SIGINT stop the
instance cleanly first. The host agent itself stays the child limactl always starts.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

POLL = 0.5


@contextmanager
def progress(inst_dir: Path, enabled: bool) -> Iterator[None]:
    """While the body runs, copy what the guest's console prints to stderr."""
    if not enabled:
        yield
        return
    done = threading.Event()
    log = inst_dir / "serial.log"
    start = log.stat().st_size if log.is_file() else 0
    thread = threading.Thread(target=_tail, args=(log, start, done), daemon=True,
                              name="progress")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2 * POLL + 1)


def _tail(log: Path, offset: int, done: threading.Event) -> None:
    pending = b""
    while True:
        finished = done.is_set()  # read once more after the body ended
        try:
            size = log.stat().st_size
            if size < offset:  # a new boot truncated the log
                offset = 0
            if size > offset:
                with log.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(size - offset)
                offset += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace").rstrip("\r")
                    sys.stderr.write(f"[console] {text}\n")
                sys.stderr.flush()
        except OSError:
            pass
        if finished:
            return
        done.wait(POLL)


@contextmanager
def foreground(enabled: bool) -> Iterator[list[int]]:
    """SIGTERM and SIGINT recorded (not fatal) while the body runs, from before the start
    on: a service manager may stop the unit at any time. The list holds what arrived."""
    asked: list[int] = []
    if not enabled:
        yield asked
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        asked.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield asked
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def stay_in_foreground(name: str, asked: list[int]) -> None:
    """Return once the instance `name` is stopped; a signal in `asked` (see `foreground`)
    stops it first."""
    from lima import paths
    from lima.commands.lifecycle import stop_instance
    from lima.drivers import store

    inst = paths.instance_dir(name)
    while not asked:
        if store.inspect_processes(name, inst).status == store.STATUS_STOPPED:
            return
        time.sleep(POLL)
    sys.stderr.write(f"[{name}] {signal.Signals(asked[0]).name}: stopping the instance\n")
    stop_instance(name, force=False)
