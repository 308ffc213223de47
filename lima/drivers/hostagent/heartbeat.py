"""Is the guest still answering? The host agent's periodic check of a running guest.

A running qemu proves nothing about the guest: a guest that hangs (a kernel stuck, a VM
paused through QMP) keeps its qemu alive and QEMU's user networking keeps accepting TCP on
the forwarded ssh port. `Heartbeat` runs a cheap command over its own ssh connection every
few seconds; after `misses` failed checks in a row the guest counts as unresponsive, and
one good answer makes it responsive again. The host agent (lima.drivers.hostagent) turns
each change into an event and into `/v1/info`, so `limactl list` and `apply` stop calling
such a guest Ready.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between checks of a healthy guest
CHECK_TIMEOUT = 10.0  # one check: ssh login (if needed) plus `true`; TCG guests are slow
MISSES = 2  # failed checks in a row before the guest counts as unresponsive

# (timeout) -> whether the guest answered within it
Probe = Callable[[float], bool]


class Heartbeat:
    """Calls `probe` every `interval` s until `stop` is set; `on_change(responsive, since)`
    is called from its thread whenever responsiveness flips."""

    def __init__(
        self,
        probe: Probe,
        on_change: Callable[[bool, float], None],
        *,
        interval: float = INTERVAL,
        timeout: float = CHECK_TIMEOUT,
        misses: int = MISSES,
    ) -> None:
        self.probe = probe
        self.on_change = on_change
        self.interval = interval
        self.timeout = timeout
        self.misses = misses
        self.responsive = True
        self._failed = 0
        self._first_failure = 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                ok = self.probe(self.timeout)
            except Exception as exc:  # a probe bug must not end the agent's heartbeat
                log.debug("heartbeat probe raised: %s", exc)
                ok = False
            if stop.is_set():
                return
            self.record(ok, time.time())

    def record(self, ok: bool, now: float) -> None:
        """One check's result (separate from run() so tests need no threads or sleeps)."""
        if ok:
            self._failed = 0
            if not self.responsive:
                self.responsive = True
                log.info("the guest answers again")
                self.on_change(True, now)
            return
        if self._failed == 0:
            self._first_failure = now
        self._failed += 1
        if self.responsive and self._failed >= self.misses:
            self.responsive = False
            log.warning("the guest has not answered ssh for %.0f s", now - self._first_failure)
            self.on_change(False, self._first_failure)
