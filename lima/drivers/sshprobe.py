"""Waiting for a guest's sshd banner through QEMU user networking (slirp).

Called by lima.drivers.ssh (readiness, logins) and, through it, by the host agent's port
forwarder and `limactl shell`. The forwarded port accepts a TCP connection at once even
when nothing listens in the guest, a connection opened before the guest NIC is up stalls
for seconds, and QEMU keeps retrying it even once it is closed here. Only an `SSH-`
banner proves sshd is up, so `wait_banner` opens a few staggered connection attempts and
closes none the guest has not answered, until the guest shows its NIC is up (it refuses a
probe: nothing listens yet; or it said so on its console, `network_up`, called by
lima.drivers.serialwatch), then one fresh one at a time. Threads of one process waiting
for the same port share one prober. `banner_socket` hands over the connection that showed
the banner, unread, for the login to use.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from collections.abc import Callable

from lima.errors import TemporaryError

HOST = "127.0.0.1"
BANNER = b"SSH-"
# QEMU's user network (slirp) accepts a probe on the host port at once, then connects to
# the guest: before the guest NIC is up it gets no ARP answer and retries that connection
# on its own TCP backoff, at about these times after the probe was opened (measured in
# captures of the guest NIC: 6 s, then every 12 s, on a 0.5 s tick), and gives up after
# 75 s. Closing the probe does not cancel this: a retry that lands once sshd listens costs
# the guest an sshd fork and exec (0.3-0.5 s of CPU under TCG) for a connection that
# slirp then closes at once. So no probe is closed before it is answered (or the banner
# came on another one), and the number opened is what is bounded: every probe opened
# before the NIC is up is such a connection unless one of its retries lands between the
# NIC coming up and sshd listening (a refusal).
SLIRP_RETRIES = (6.0, 18.0, 30.0, 42.0, 54.0, 66.0)
SLIRP_GIVES_UP = 70.0  # a probe slirp closes this old was never answered: not a refusal
# Before the guest has answered anything: the first MAX_IN_FLIGHT probes go out one
# `interval` apart; after that a new probe only fills a hole in the connection attempts
# slirp is known to make (a probe's own, then its retries at SLIRP_RETRIES): one starts
# once none was made for STAGGER_GAP s and none is due within half of it, so the guest
# NIC coming up is seen within about that long, with a handful of probes open (about
# 12 / STAGGER_GAP). At most MAX_PROBES stay open.
MAX_IN_FLIGHT = 2
STAGGER_GAP = 4.0
MAX_PROBES = 12
# Once the guest has refused a probe (RST: its NIC is up, nothing listens yet), a new
# probe is answered at once, and one that stays silent is sshd forking and exec'ing under
# TCG: the probes opened before stay open but no longer count, and one fresh probe at a
# time is in flight, the next one as soon as it is refused (a refusal costs the guest
# nothing but an RST). A fresh probe silent for MAX_PROBE_LIFETIME (a guest that
# rebooted) no longer counts either. A prober for a port whose banner this process has
# already seen starts that way.
IN_FLIGHT_NIC_UP = 1
MAX_PROBE_LIFETIME = 30.0
class _Probe:
    """One non-blocking connection attempt waiting for the banner."""

    def __init__(self, port: int, now: float) -> None:
        self.started = now
        self.connected = False
        self.data = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        rc = self.sock.connect_ex((HOST, port))
        if rc not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self.sock.close()
            raise OSError(rc, "connect failed")
        self.connected = rc == 0

    def close(self) -> None:
        self.sock.close()

    def step(self) -> bool | None:
        """Advance after select() said the socket is ready.

        True: the banner arrived. False: this probe is dead. None: keep waiting.
        """
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return False
            self.connected = True
            return None
        try:
            # Peeked, not read: the connection that shows the banner is the one the login
            # then uses (lima.drivers.ssh.connect's `sock`), so sshd reads it from there.
            data = self.sock.recv(len(BANNER), socket.MSG_PEEK)
        except BlockingIOError:
            return None
        except OSError:
            return False
        if not data:
            return False
        if len(data) < len(BANNER):
            if not BANNER.startswith(data):
                return False
            if data == self.data:
                time.sleep(0.01)  # the rest of a split banner (peeking reads it again)
            self.data = data
            return None
        self.data = data
        return data == BANNER


class _SharedProbe:
    """The prober of one port in this process, and whether it saw a banner."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.found = False


_shared_lock = threading.Lock()
_shared: dict[int, _SharedProbe] = {}
_seen: set[int] = set()  # ports whose banner this process has seen: the NIC is up
_network_up: set[int] = set()  # ports whose guest said its NIC is up (network_up)


def network_up(port: int) -> None:
    """The guest behind 127.0.0.1:`port` said its network is up (lima.drivers.serialwatch):
    its prober, running or to come, probes as after a refusal, one fresh probe at a time,
    from now on."""
    with _shared_lock:
        _network_up.add(port)


def wait_banner(
    port: int, *, deadline: float, interval: float = 0.25,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Return once a connection to 127.0.0.1:`port` reads an `SSH-` banner.

    `deadline` is a `time.monotonic()` value; past it (or once `cancelled()` is true),
    raise TemporaryError. While another thread of this process probes the same port, this
    one waits for that prober's answer instead of opening connections of its own (each one
    costs the guest an sshd fork and exec), and takes over if that prober gives up.
    """
    sock = banner_socket(port, deadline=deadline, interval=interval, cancelled=cancelled)
    if sock is not None:
        sock.close()


def banner_socket(
    port: int, *, deadline: float, interval: float = 0.25,
    cancelled: Callable[[], bool] | None = None,
) -> socket.socket | None:
    """`wait_banner`, returning the connection that showed the banner, unread (blocking),
    for a login to use (`connect(sock=...)`): under TCG a new connection costs the guest
    an sshd fork and exec, about a second. None when another thread's prober saw it."""
    while True:
        with _shared_lock:
            shared = _shared.get(port)
            leader = shared is None
            if shared is None:
                shared = _shared[port] = _SharedProbe()
        if leader:
            break
        while not shared.done.wait(timeout=min(interval, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (cancelled is not None and cancelled()):
                raise TemporaryError(
                    f"ssh on 127.0.0.1:{port}: no SSH banner before the deadline", delay=interval
                )
        if shared.found:
            return None
        # That prober gave up (its own deadline): probe in its place.
    try:
        sock = _probe_banner(port, deadline=deadline, interval=interval, cancelled=cancelled,
                             nic_up=port in _seen or port in _network_up)
        shared.found = True
        _seen.add(port)
        return sock
    finally:
        with _shared_lock:
            _shared.pop(port, None)
        shared.done.set()


def _syn_times(started: float) -> tuple[float, ...]:
    """When slirp tries to reach the guest for a probe opened at `started` (pure)."""
    return (started, *(started + r for r in SLIRP_RETRIES))


def _may_stagger(probes: list[_Probe], now: float) -> bool:
    """Before the guest answered: whether a new probe fills a hole in slirp's attempts."""
    times = [t for p in probes for t in _syn_times(p.started)]
    last = max((t for t in times if t <= now), default=-STAGGER_GAP)
    due = min((t for t in times if t > now), default=now + STAGGER_GAP)
    return now - last >= STAGGER_GAP and due - now > STAGGER_GAP / 2


def _probe_banner(
    port: int, *, deadline: float, interval: float, cancelled: Callable[[], bool] | None,
    nic_up: bool = False,
) -> socket.socket:
    probes: list[_Probe] = []
    fresh: set[_Probe] = set()  # opened once the guest's NIC was known to be up
    opened = 0
    next_start = 0.0
    last_error = "no banner yet"
    try:
        while True:
            now = time.monotonic()
            if not nic_up and port in _network_up:
                nic_up = True  # the guest said so: probe now, as after a refusal
                next_start = now
            if now >= deadline or (cancelled is not None and cancelled()):
                raise TemporaryError(
                    f"ssh on 127.0.0.1:{port}: no SSH banner before the deadline ({last_error})",
                    delay=interval,
                )
            if nic_up:
                counted = [p for p in fresh if now - p.started < MAX_PROBE_LIFETIME]
                may_start = len(counted) < IN_FLIGHT_NIC_UP
            else:
                may_start = opened < MAX_IN_FLIGHT or _may_stagger(probes, now)
            if now >= next_start and may_start and len(probes) < MAX_PROBES:
                try:
                    probe = _Probe(port, now)
                    probes.append(probe)
                    opened += 1
                    if nic_up:
                        fresh.add(probe)
                except OSError as exc:
                    last_error = f"connect: {exc.strerror or exc}"
                next_start = now + interval
            # Before the NIC is up, look again soon: _may_stagger changes with the clock.
            wake = now + (1.0 if nic_up else max(interval, 0.05))
            if next_start > now:
                wake = min(wake, next_start)
            wait = max(0.0, min(wake, deadline) - time.monotonic())
            readers = [p.sock for p in probes if p.connected]
            writers = [p.sock for p in probes if not p.connected]
            if not readers and not writers:
                time.sleep(wait)
                continue
            ready_r, ready_w, _ = select.select(readers, writers, [], wait)
            ready = set(ready_r) | set(ready_w)
            for probe in [p for p in probes if p.sock in ready]:
                result = probe.step()
                if result is True:
                    probes.remove(probe)
                    probe.sock.setblocking(True)
                    return probe.sock
                if result is False:
                    probe.close()
                    probes.remove(probe)
                    fresh.discard(probe)
                    if not nic_up and time.monotonic() - probe.started >= SLIRP_GIVES_UP:
                        continue  # slirp gave up on it: the guest never answered
                    last_error = "connection closed before the banner"
                    # The guest refused it: its NIC is up (see IN_FLIGHT_NIC_UP). The
                    # probes opened before stay open: a retry of theirs may yet be the one
                    # sshd answers first.
                    nic_up = True
    finally:
        for probe in probes:
            probe.close()
