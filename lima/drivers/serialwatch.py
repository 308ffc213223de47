"""The guest's serial console log, read for the line that says its network is up, and
for boot.sh's own lines (ConsoleTail).

cloud-init's bootcmd (lima.drivers.cloudconfig.boot_hook_script) writes NETWORK_UP_LINE
(lima.drivers.guest) to the console first thing: bootcmd runs in cloud-init's network
stage, so the guest's NIC is up, and sshd starts a second or two later. Until then the
host cannot tell a guest whose NIC is still down from one whose sshd is not listening yet,
and the ssh prober (lima.drivers.sshprobe) only learns that the NIC is up when QEMU's user
network delivers a connection attempt to the guest and the guest refuses it: with its
probes staggered on slirp's own retry schedule, that came 1-3 s after sshd was listening.
Told by this watcher, it probes at once and every quarter second, so the first login
follows sshd within that.

The host agent starts `watch_network_up` for a cold boot (SSHGuest.ready) and stops it once
ssh is ready. QEMU truncates serial.log when it starts (the chardev's `logappend` is off),
so every line in it is this boot's.

boot.sh (lima/assets/cidata/boot.sh) copies its log lines ("LIMA <time>| ...") to the
console, each after what it reports is done: its last, "boot.sh finished", follows the
marker readiness waits for. A ConsoleTail counts them, so readiness looks at the markers
over ssh when boot.sh has said something new (or after a fallback interval), instead of
five times a second: every look costs the TCG guest an sshd session and a shell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from lima.drivers.guest import NETWORK_UP_LINE

POLL = 0.1  # seconds between looks at the log
_CHUNK = 1 << 16


def find_line(log: Path, stop: threading.Event, found: Callable[[], None],
              line: str = NETWORK_UP_LINE, poll: float = POLL) -> None:
    """Read `log` as it grows until `line` appears in it (then call `found()`) or `stop`
    is set. A log that is missing or shrinks (QEMU started again) is read from the start."""
    needle = line.encode()
    tail = ConsoleTail(log, (needle,), poll).start()
    try:
        while not stop.is_set():
            if tail.wait(needle, 0, 3600.0, stop):
                found()
                return
    finally:
        tail.stop()


def watch_network_up(log: Path, port: int, stop: threading.Event) -> threading.Thread:
    """Start a thread that tells lima.drivers.sshprobe the guest's network is up (for ssh on
    127.0.0.1:`port`) once `log` shows NETWORK_UP_LINE; it ends then or once `stop` is set."""
    from lima.drivers import sshprobe

    thread = threading.Thread(target=find_line,
                              args=(log, stop, lambda: sshprobe.network_up(port)),
                              name="serial-network-up", daemon=True)
    thread.start()
    return thread


# boot.sh's console lines (ConsoleTail's counts): any of them, and its last one.
LIMA_LINE = b"LIMA "
FINISHED_LINE = b"| boot.sh finished"


class ConsoleTail:
    """Counts occurrences of `needles` in `log` as it grows, in a thread of its own.

    `count(needle)` is how many there were so far; `wait(needle, seen, timeout, stop)`
    returns once there are more than `seen`, `timeout` passed or `stop` is set. A log that
    shrinks (QEMU started again) is read from its start, the counts going on. `present`:
    the log could be opened (QEMU writes one; a stand-in for it may not).
    """

    def __init__(self, log: Path, needles: tuple[bytes, ...] = (LIMA_LINE, FINISHED_LINE),
                 poll: float | None = None) -> None:
        self.log = log
        self.poll = POLL if poll is None else poll
        self._counts = dict.fromkeys(needles, 0)
        self._offset = 0
        self._tails = dict.fromkeys(needles, b"")  # each needle's last len - 1 bytes read
        self.present = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-console", daemon=True)

    def start(self) -> ConsoleTail:
        """Read what the log holds now (so `present` and the counts are set on return),
        then follow it in a thread."""
        self._read()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def count(self, needle: bytes) -> int:
        with self._changed:
            return self._counts[needle]

    def wait(self, needle: bytes, seen: int, timeout: float,
             stop: threading.Event | None = None) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._counts[needle] <= seen and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    break
                # In slices: `stop` is an Event of the caller's, not this condition.
                self._changed.wait(min(left, self.poll))
            return self._counts[needle]

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._read()

    def _read(self) -> None:
        try:
            with self.log.open("rb") as f:
                self.present = True
                if f.seek(0, 2) < self._offset:
                    self._offset, self._tails = 0, dict.fromkeys(self._counts, b"")
                f.seek(self._offset)
                while chunk := f.read(_CHUNK):
                    self._offset += len(chunk)
                    found = {}
                    for n in self._counts:
                        text = self._tails[n] + chunk
                        found[n] = text.count(n)
                        # The last len - 1 bytes: an occurrence split between two reads is
                        # found, and none is counted twice.
                        self._tails[n] = text[len(text) - len(n) + 1:] if len(n) > 1 else b""
                    if any(found.values()):
                        with self._changed:
                            for n, k in found.items():
                                self._counts[n] += k
                            self._changed.notify_all()
        except OSError:
            self._offset, self._tails = 0, dict.fromkeys(self._counts, b"")
