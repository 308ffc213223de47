"""sshprobe.wait_banner against local TCP servers that behave like QEMU's forwarded port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lima.drivers import sshprobe as ssh
from lima.drivers.sshprobe import MAX_IN_FLIGHT, banner_socket, wait_banner
from lima.errors import TemporaryError

# When QEMU's user network tries again to reach the guest for a connection it accepted
# before the guest NIC was up (seconds after the accept; measured in captures of boots).
SLIRP_RETRIES = (6.0, 18.0, 30.0, 42.0, 54.0, 66.0)
# The time slow sshd answers are compared with (the pacing of the probes before it).
PROBE_LIFETIME = 3.0

Handler = Callable[[socket.socket, int], None]


class Server:
    """Accepts on 127.0.0.1 and hands each connection (with its index) to a handler."""

    def __init__(self, handler: Handler) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.handler = handler
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.accepted: list[float] = []  # time.monotonic() of each accept
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(time.monotonic())
            self.conns.append(conn)
            threading.Thread(target=self.handler, args=(conn, n), daemon=True).start()
            n += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()
        for conn in self.conns:
            conn.close()


def banner_after(delay: float, *, closed_first: int = 0) -> Handler:
    """A handler like a slow sshd: the first `closed_first` connections are closed at once
    (nothing listens yet), each later one gets its banner `delay` seconds after accept."""
    def handler(conn: socket.socket, n: int) -> None:
        if n < closed_first:
            conn.close()
            return
        time.sleep(delay)
        # The prober may already have moved on to a newer connection.
        with contextlib.suppress(OSError):
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    return handler


@pytest.fixture(autouse=True)
def _no_banner_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process: no port's banner seen yet (ports get reused)."""
    monkeypatch.setattr(ssh, "_seen", set(), raising=False)
    monkeypatch.setattr(ssh, "_network_up", set(), raising=False)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Server]]:
    servers: list[Server] = []

    def start(handler: Handler) -> Server:
        server = Server(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_banner_after_silence(serve: Callable[[Handler], Server]) -> None:
    def handler(conn: socket.socket, _: int) -> None:
        time.sleep(0.3)
        # The prober may already have moved on to a newer connection.
        with contextlib.suppress(OSError):
            conn.sendall(b"SSH-2.0-x\r\n")

    server = serve(handler)
    start = time.monotonic()
    wait_banner(server.port, deadline=start + 20)
    elapsed = time.monotonic() - start
    # It waited out the silence, no longer than a few probe rounds after the banner came.
    assert 0.3 <= elapsed < 3.0
    # The first connection's banner arrives 0.3 s in; a prober that reconnects in a busy
    # loop instead of waiting on its connections would have made hundreds.
    assert 1 <= len(server.conns) <= 10


def test_the_banner_connection_is_handed_over_unread(
    serve: Callable[[Handler], Server],
) -> None:
    """The login uses the probe's own connection (sshd forked and exec'd for it): the
    banner is still there to read, split or not, and the connection stays usable."""
    def handler(conn: socket.socket, _: int) -> None:
        conn.sendall(b"SS")
        time.sleep(0.2)
        conn.sendall(b"H-2.0-x\r\n")
        conn.sendall(conn.recv(64).upper())  # echoes, as the key exchange would go on

    server = serve(handler)
    sock = banner_socket(server.port, deadline=time.monotonic() + 20)
    assert sock is not None
    with sock:
        assert sock.getblocking()
        sock.settimeout(5)
        banner = b"SSH-2.0-x\r\n"
        assert sock.recv(len(banner), socket.MSG_WAITALL) == banner
        sock.sendall(b"kex")
        assert sock.recv(64) == b"KEX"
    assert len(server.conns) == 1


def test_a_refused_probe_frees_the_slots_of_older_stalled_ones(
    serve: Callable[[Handler], Server],
) -> None:
    """Probes opened before the guest NIC was up stay unanswered (QEMU's user network
    retries them on its own backoff); once a newer one is refused, the NIC is up: they no
    longer hold a slot, and the next probe starts at once instead of after their lifetime."""
    stalled = threading.Event()

    def handler(conn: socket.socket, n: int) -> None:
        if n < MAX_IN_FLIGHT - 1:
            stalled.wait(20)  # accepted by the forwarder, never answered
        elif n == MAX_IN_FLIGHT - 1:
            time.sleep(0.3)  # slirp's retry of it, refused: a guest with nothing on port 22
            conn.close()
        else:
            conn.sendall(b"SSH-2.0-x\r\n")

    server = serve(handler)
    start = time.monotonic()
    try:
        wait_banner(server.port, deadline=start + 20)
    finally:
        stalled.set()
    # Counted, the stalled probes would hold the one slot until slirp retries them.
    assert time.monotonic() - start < PROBE_LIFETIME - 1
    assert len(server.conns) == MAX_IN_FLIGHT + 1


def test_stalled_early_connections_are_overtaken(serve: Callable[[Handler], Server]) -> None:
    """Like a probe sent before the guest NIC is up: the first connections never answer.

    A single blocking attempt would hang on connection 0 until the deadline.
    """
    def handler(conn: socket.socket, n: int) -> None:
        if n >= MAX_IN_FLIGHT - 1:
            conn.sendall(b"SSH-2.0-dropbear\r\n")

    server = serve(handler)
    wait_banner(server.port, deadline=time.monotonic() + 20, interval=0.05)
    assert len(server.conns) == MAX_IN_FLIGHT


def test_slow_sshd_gets_to_answer(serve: Callable[[Handler], Server]) -> None:
    """Like sshd in a CPU-starved TCG guest: every connection costs it a fork and exec, and
    its banner comes seconds later. The prober neither closes a probe before its lifetime
    to make room (then no banner ever arrived) nor keeps opening new ones meanwhile."""
    delay = PROBE_LIFETIME - 0.6

    server = serve(banner_after(delay))
    start = time.monotonic()
    wait_banner(server.port, deadline=start + 20)
    assert delay <= time.monotonic() - start < PROBE_LIFETIME
    assert len(server.conns) == MAX_IN_FLIGHT


def test_sshd_slower_than_a_probe_lifetime_still_answers(
    serve: Callable[[Handler], Server],
) -> None:
    """Under a heavily loaded host sshd's banner can take longer than PROBE_LIFETIME: the
    probes retired without one give their successors longer, so one lives to read it."""
    delay = PROBE_LIFETIME + 1.5

    server = serve(banner_after(delay))
    start = time.monotonic()
    wait_banner(server.port, deadline=start + 30)
    assert time.monotonic() - start >= delay
    # No flood: a handful of overlapping probes, not one every interval.
    assert len(server.conns) <= 3 * MAX_IN_FLIGHT


def test_silent_server_times_out(serve: Callable[[Handler], Server]) -> None:
    server = serve(lambda conn, n: None)
    with pytest.raises(TemporaryError, match="no SSH banner"):
        wait_banner(server.port, deadline=time.monotonic() + 0.6)
    assert len(server.conns) >= 2  # attempts overlapped instead of waiting on one


def test_closing_server_is_not_a_banner(serve: Callable[[Handler], Server]) -> None:
    server = serve(lambda conn, n: conn.close())
    with pytest.raises(TemporaryError):
        wait_banner(server.port, deadline=time.monotonic() + 0.4)


def test_wrong_greeting_is_not_a_banner(serve: Callable[[Handler], Server]) -> None:
    server = serve(lambda conn, n: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n"))
    with pytest.raises(TemporaryError):
        wait_banner(server.port, deadline=time.monotonic() + 0.4)


def test_refused_port_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TemporaryError):
        wait_banner(port, deadline=time.monotonic() + 0.6)


def test_nic_up_means_one_probe_at_a_time(serve: Callable[[Handler], Server]) -> None:
    """Like a guest whose NIC is up but whose sshd is slow to start: the first connections
    are closed (nothing listens), the later ones are sshd forking for seconds. After the
    first close, probes no longer overlap: each would cost the guest another sshd."""
    server = serve(banner_after(1.0, closed_first=2))
    wait_banner(server.port, deadline=time.monotonic() + 20, interval=0.05)
    # Two closed ones, then the one that answered: no others opened meanwhile.
    assert len(server.conns) == 3


def test_threads_waiting_for_one_port_share_a_prober(serve: Callable[[Handler], Server]) -> None:
    server = serve(banner_after(0.8))
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            wait_banner(server.port, deadline=time.monotonic() + 20)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # One prober's connections, not three probers' (MAX_IN_FLIGHT each).
    assert len(server.conns) <= MAX_IN_FLIGHT


def test_a_cancelled_wait_stops_probing(serve: Callable[[Handler], Server]) -> None:
    server = serve(lambda conn, n: None)
    start = time.monotonic()
    with pytest.raises(TemporaryError):
        wait_banner(server.port, deadline=start + 20,
                    cancelled=lambda: time.monotonic() > start + 0.3)
    assert time.monotonic() - start < 2.0


def test_nic_up_probe_waits_out_a_slow_sshd(serve: Callable[[Handler], Server]) -> None:
    """Once the guest has closed a probe, a silent one is sshd starting: it is kept past
    PROBE_LIFETIME instead of being retired (which killed that sshd before its banner)."""
    delay = PROBE_LIFETIME + 1.0

    server = serve(banner_after(delay, closed_first=1))
    start = time.monotonic()
    wait_banner(server.port, deadline=start + 20, interval=0.05)
    assert time.monotonic() - start >= delay
    assert len(server.conns) == 2


class Slirp:
    """The guest end of QEMU's user network, on a time scale of its own (`scale` s for 1 s).

    Each accepted connection is tried at once and again at SLIRP_RETRIES after its
    accept, whether or not the prober has closed it meanwhile (closing does not cancel).
    Before `nic_up` a try is dropped; before `listen` the guest refuses it (the connection
    closes); from `listen` on sshd accepts it (a fork and exec) and shows its banner
    `sshd_delay` later. Times are seconds after `start`, unscaled.
    """

    def __init__(self, *, nic_up: float, listen: float, sshd_delay: float, scale: float) -> None:
        self.nic_up, self.listen, self.sshd_delay = nic_up, listen, sshd_delay
        self.scale = scale
        self.start = time.monotonic()
        self.stop = threading.Event()

    def tries(self, accepted: float) -> list[float]:
        opened = (accepted - self.start) / self.scale
        return [opened, *(opened + r for r in SLIRP_RETRIES)]

    def fate(self, accepted: float) -> str:
        """What the guest does with a connection accepted at `accepted` (monotonic)."""
        for t in self.tries(accepted):
            if t >= self.listen:
                return "sshd"
            if t >= self.nic_up:
                return "refused"
        return "dropped"

    def handler(self, conn: socket.socket, _: int) -> None:
        accepted = time.monotonic()
        for t in self.tries(accepted):
            if self.stop.wait(max(0.0, self.start + t * self.scale - time.monotonic())):
                return
            if t >= self.listen:
                if not self.stop.wait(self.sshd_delay * self.scale):
                    with contextlib.suppress(OSError):
                        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                return
            if t >= self.nic_up:
                conn.close()
                return


@pytest.fixture
def slirp_scaled(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Run the prober `scale` times faster (its slirp model and pacing), as Slirp does."""
    def scaled(scale: float) -> None:
        monkeypatch.setattr(ssh, "SLIRP_RETRIES", tuple(r * scale for r in SLIRP_RETRIES),
                            raising=False)
        for name in ("STAGGER_GAP", "MAX_PROBE_LIFETIME", "SLIRP_GIVES_UP", "PROBE_LIFETIME"):
            if hasattr(ssh, name):
                monkeypatch.setattr(ssh, name, getattr(ssh, name) * scale)

    return scaled


def test_a_boot_through_slirp_reaches_sshd_with_few_probes(
    serve: Callable[[Handler], Server], slirp_scaled: Callable[[float], None],
) -> None:
    """The Debian boot measured under TCG, 5 times faster: the NIC comes up at 20.85 s, sshd
    listens at 28.5 s, its banner takes 2.4 s. Every probe opened before the NIC is up is
    a connection sshd may fork for later (closing it does not cancel it): a handful are
    opened, staggered, and the banner comes soon after sshd listens."""
    scale = 0.2
    slirp_scaled(scale)
    guest = Slirp(nic_up=20.85, listen=28.5, sshd_delay=2.4, scale=scale)
    server = serve(guest.handler)
    try:
        wait_banner(server.port, deadline=guest.start + 60 * scale, interval=0.25 * scale)
        found = (time.monotonic() - guest.start) / scale
    finally:
        guest.stop.set()
    forks = [a for a in server.accepted if guest.fate(a) == "sshd"]
    # sshd forks for the probe that wins, and at most for the first probes (their slirp
    # retries skipped the time between the NIC coming up and sshd listening).
    assert 1 <= len(forks) <= MAX_IN_FLIGHT + 1, [guest.tries(a) for a in server.accepted]
    assert found < 28.5 + 2.4 + 1.5
    # Opened before the NIC came up: a handful, not one every few seconds per slot. After
    # it, fresh probes cost the guest an RST each until sshd listens.
    early = [a for a in server.accepted if guest.tries(a)[0] < guest.nic_up]
    assert MAX_IN_FLIGHT <= len(early) <= 8, [guest.tries(a) for a in early]


def test_a_stalled_probe_may_show_the_banner(serve: Callable[[Handler], Server]) -> None:
    """A probe opened before the NIC was up stays open after a refusal: slirp's retry of
    it may reach sshd first, and then its connection is the one that shows the banner."""
    refused = threading.Event()

    def handler(conn: socket.socket, n: int) -> None:
        if n == 0:
            refused.wait(20)
            time.sleep(0.2)  # its retry came once sshd listened
            with contextlib.suppress(OSError):
                conn.sendall(b"SSH-2.0-stalled\r\n")
        elif n == 1:
            time.sleep(0.3)  # slirp's retry of it, refused: the NIC is up
            conn.close()
            refused.set()
        elif n < MAX_IN_FLIGHT:
            time.sleep(20)  # still in slirp's backoff
        else:
            time.sleep(3)  # sshd forking for it, slowly
            with contextlib.suppress(OSError):
                conn.sendall(b"SSH-2.0-fresh\r\n")

    server = serve(handler)
    start = time.monotonic()
    sock = banner_socket(server.port, deadline=start + 20, interval=0.05)
    assert sock is not None
    with sock:
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"SSH-2.0-stalled")
    assert time.monotonic() - start < 2.0
    # The burst, then one fresh probe after the refusal.
    assert len(server.conns) == MAX_IN_FLIGHT + 1


def test_stalled_probes_hold_no_slot_after_a_refusal(serve: Callable[[Handler], Server]) -> None:
    """The oldest probe is refused (slirp's retry reached the guest once its NIC was up),
    the newer ones are still in slirp's backoff: they must not keep the one slot, or the
    banner waits for their next retry (seconds to tens of seconds)."""
    def handler(conn: socket.socket, n: int) -> None:
        if n == 0:
            time.sleep(0.3)
            conn.close()
        elif n < MAX_IN_FLIGHT:
            time.sleep(20)
        else:
            conn.sendall(b"SSH-2.0-x\r\n")

    server = serve(handler)
    start = time.monotonic()
    wait_banner(server.port, deadline=start + 10, interval=0.05)
    assert time.monotonic() - start < 1.5
    assert len(server.conns) == MAX_IN_FLIGHT + 1


def test_a_later_prober_opens_one_probe(serve: Callable[[Handler], Server]) -> None:
    """Once this process has seen the banner on a port, the guest's NIC is up and sshd
    listens: the port forwarder's login after readiness's probes with one connection (each
    one costs the guest an sshd fork and exec), not a burst of MAX_IN_FLIGHT."""
    server = serve(banner_after(1.0))
    wait_banner(server.port, deadline=time.monotonic() + 20)
    first = len(server.conns)
    assert first == MAX_IN_FLIGHT  # nothing known yet: the burst
    sock = banner_socket(server.port, deadline=time.monotonic() + 20)
    assert sock is not None
    sock.close()
    assert len(server.conns) - first == 1


def _boot_through_slirp(serve: Callable[[Handler], Server], *, told_at: float | None) -> float:
    """A boot whose NIC comes up just after a staggered probe was dropped (10.6 s; its
    slirp retry comes at 16.25 s), sshd listening at 14.3 s: when the banner came, in
    the guest's seconds, with the guest saying its network is up at `told_at` or not."""
    scale = 0.2
    guest = Slirp(nic_up=10.6, listen=14.3, sshd_delay=0.5, scale=scale)
    server = serve(guest.handler)
    teller = None
    if told_at is not None:
        teller = threading.Timer(told_at * scale, ssh.network_up, args=(server.port,))
        teller.start()
    try:
        wait_banner(server.port, deadline=guest.start + 60 * scale, interval=0.25 * scale)
        return (time.monotonic() - guest.start) / scale
    finally:
        guest.stop.set()
        if teller is not None:
            teller.cancel()


def test_a_guest_that_says_its_network_is_up_is_probed_at_once(
    serve: Callable[[Handler], Server], slirp_scaled: Callable[[float], None],
) -> None:
    """Told that the guest's NIC is up (its console line, lima.drivers.serialwatch), the
    prober probes as after a refusal, one fresh probe a quarter second: the banner follows
    sshd within that. Left to slirp's retries, it came with the next one, 2 s later."""
    slirp_scaled(0.2)
    told = _boot_through_slirp(serve, told_at=11.3)
    assert 14.3 + 0.5 <= told < 14.3 + 0.5 + 0.75
    untold = _boot_through_slirp(serve, told_at=None)
    assert untold >= 16.25 + 0.5 - 0.1
