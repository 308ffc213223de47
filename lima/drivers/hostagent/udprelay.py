"""UDP port forwards carried over ssh: a datagram relay in the guest behind an exec channel.

Used by the port forwarder (lima.drivers.hostagent.portfwd) for UDP listeners that QEMU's
own forward cannot reach: a listener on a guest loopback address, a static UDP forward,
and every UDP listener when the user network is `restrict=on` (libslirp then drops every
datagram the guest sends, so a `hostfwd=udp:` forward would carry requests but never an
answer). ssh has no datagram channel, so a `UDPRelay` binds the host address itself and
opens one exec channel per forward running `RELAY` with the guest's python3; both ends
frame each datagram as client id (4 bytes), length (2 bytes) and payload, so datagram
boundaries survive the byte stream. Each host client (source address) gets its own
connected socket in the guest, as Lima's relay gives each client its own stream; a client
idle for IDLE seconds is forgotten on both sides.

A guest without python3 (build:tiny) cannot run the relay: the first attempt fails with
exit status 127 and `on_failure` says so (the forwarder turns it into a `failed` event).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from lima.drivers.hostagent.tunnel import GuestEnd
from lima.drivers.portrules import HostTarget

log = logging.getLogger(__name__)

IDLE = 120.0  # seconds a client may stay silent before its guest socket is closed
RETRY = 5.0  # seconds between attempts to start the guest relay after a failure
_POLL = 0.5
_HEAD = struct.Struct(">IH")
NO_PYTHON = ("forwarding UDP through ssh needs python3 in the guest (the datagram relay); "
             "this guest has none")

# The guest end, run as `python3 -c RELAY IP PORT`: stdin and stdout carry framed
# datagrams; one connected UDP socket per client id. Only the standard library.
RELAY = r"""
import os, select, socket, struct, sys, time
ip, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
head = struct.Struct(">IH")
socks, ids, buf = {}, {}, b""
def out(cid, data):
    msg = head.pack(cid, len(data)) + data
    while msg:
        msg = msg[os.write(1, msg):]
while True:
    ready = select.select([0] + list(ids), [], [], 5.0)[0]
    now = time.monotonic()
    for s in ready:
        if s == 0:
            data = os.read(0, 262144)
            if not data:
                sys.exit(0)
            buf += data
            while len(buf) >= 6:
                cid, n = head.unpack_from(buf)
                if len(buf) < 6 + n:
                    break
                payload, buf = buf[6:6 + n], buf[6 + n:]
                entry = socks.get(cid)
                if entry is None:
                    k = socket.socket(fam, socket.SOCK_DGRAM)
                    k.connect((ip, port))
                    entry = socks[cid] = [k, now]
                    ids[k] = cid
                entry[1] = now
                try:
                    entry[0].send(payload)
                except OSError:
                    pass
        else:
            cid = ids[s]
            try:
                data = s.recv(65535)
            except OSError:
                continue
            socks[cid][1] = now
            out(cid, data)
    for cid, (k, seen) in list(socks.items()):
        if now - seen > idle:
            del socks[cid], ids[k]
            k.close()
"""


class Channel(Protocol):
    """The part of paramiko.Channel the relay uses."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> Any: ...
    def close(self) -> None: ...
    def recv_exit_status(self) -> int: ...
    def recv_stderr(self, n: int) -> bytes: ...


Exec = Callable[[str], Channel]  # a command line -> an exec channel running it in the guest


def relay_command(end: GuestEnd, idle: float = IDLE) -> str:
    return shlex.join(["python3", "-c", RELAY, end.ip, str(end.port), str(idle)])


def bind_udp(target: HostTarget) -> socket.socket:
    """The host socket of a UDP forward (OSError when the address cannot be bound). No
    SO_REUSEADDR: with it Linux would let two UDP sockets share the port silently."""
    family = socket.AF_INET6 if ":" in target.ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((target.ip, target.port))
    except OSError:
        sock.close()
        raise
    sock.settimeout(_POLL)
    return sock


class UDPRelay:
    """One UDP forward: datagrams to `target` on the host go to `end` in the guest, and the
    guest's answers back to the client that sent the request."""

    proto = "udp"

    def __init__(self, target: HostTarget, end: GuestEnd, execute: Exec,
                 on_failure: Callable[[str], None] | None = None, *,
                 idle: float = IDLE, eager: bool = True) -> None:
        self.target, self.end, self.execute = target, end, execute
        self.on_failure, self.idle = on_failure, idle
        self.sock = bind_udp(target)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the client maps and _chan
        self._starting = threading.Lock()  # one guest relay start at a time
        self._chan: Channel | None = None
        self._failed_at = 0.0
        self._reported = False
        self._clients: dict[tuple[Any, ...], int] = {}
        self._addrs: dict[int, tuple[Any, ...]] = {}
        self._seen: dict[int, float] = {}
        self._next_id = 1
        threading.Thread(target=self._from_clients, name=f"udp {target.text()}",
                         daemon=True).start()
        # For a listener the guest relay starts now (an ssh exec and a python3 start in a
        # TCG guest take a while), not with the first datagram. A static forward waits for
        # its first datagram: a static range must not start a relay per port up front.
        if eager:
            threading.Thread(target=self._channel, name="udp-relay-start",
                             daemon=True).start()

    # --- host clients -> guest ------------------------------------------------------------

    def _from_clients(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                self._expire()
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            cid = self._client(addr)
            chan = self._channel()
            if chan is None:
                continue  # dropped, as a network would drop it
            try:
                chan.sendall(_HEAD.pack(cid, len(data)) + data)
            except Exception as exc:  # a dead channel: the next datagram starts a new one
                log.info("UDP relay %s: %s", self.target.text(), exc)
                self._drop(chan)

    def _client(self, addr: tuple[Any, ...]) -> int:
        with self._lock:
            cid = self._clients.get(addr)
            if cid is None:
                cid = self._next_id
                self._next_id = self._next_id % 0xFFFFFFFF + 1
                self._clients[addr], self._addrs[cid] = cid, addr
            self._seen[cid] = time.monotonic()
            return cid

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for cid, seen in list(self._seen.items()):
                if now - seen > self.idle:
                    del self._seen[cid]
                    self._clients.pop(self._addrs.pop(cid), None)

    # --- the guest relay ------------------------------------------------------------------

    def _channel(self) -> Channel | None:
        # Not under _lock: the start can wait for the guest's ssh (boot), and close() or
        # an answer on the way back must not wait for it.
        with self._starting:
            if self._chan is not None or self._stop.is_set():
                return self._chan
            if time.monotonic() - self._failed_at < RETRY:
                return None
            try:
                chan = self.execute(relay_command(self.end, self.idle))
            except Exception as exc:
                self._failed_at = time.monotonic()
                log.info("UDP relay %s: cannot start it in the guest: %s", self.target.text(),
                         exc)
                return None
            with self._lock:
                self._chan = chan
            if self._stop.is_set():  # closed while it started
                self._drop(chan)
                return None
        threading.Thread(target=self._from_guest, args=(chan,), name="udp-relay-read",
                         daemon=True).start()
        return chan

    def _from_guest(self, chan: Channel) -> None:
        buf = b""
        try:
            while True:
                data = chan.recv(262144)
                if not data:
                    break
                buf += data
                while len(buf) >= _HEAD.size:
                    cid, n = _HEAD.unpack_from(buf)
                    if len(buf) < _HEAD.size + n:
                        break
                    payload, buf = buf[_HEAD.size:_HEAD.size + n], buf[_HEAD.size + n:]
                    with self._lock:
                        addr = self._addrs.get(cid)
                        if addr is not None:  # answers keep a client alive too
                            self._seen[cid] = time.monotonic()
                    if addr is not None:
                        with contextlib.suppress(OSError):
                            self.sock.sendto(payload, addr)
        except Exception as exc:
            log.info("UDP relay %s: channel lost: %s", self.target.text(), exc)
        if self._stop.is_set():
            return
        self._ended(chan)

    def _ended(self, chan: Channel) -> None:
        """The guest relay exited: say why once (no python3), then start it again later."""
        status, err = -1, b""
        with contextlib.suppress(Exception):
            status = chan.recv_exit_status()
            err = chan.recv_stderr(4096)
        self._drop(chan)
        with self._lock:
            self._failed_at = time.monotonic()
        why = NO_PYTHON if status == 127 else (
            f"the guest's UDP relay exited with status {status}: "
            f"{err.decode(errors='replace').strip()[-300:]}")
        log.warning("UDP relay %s -> %s: %s", self.target.text(), self.end.text(), why)
        if status == 127 and not self._reported and self.on_failure is not None:
            self._reported = True
            self.on_failure(why)

    def _drop(self, chan: Channel) -> None:
        with self._lock:
            if self._chan is chan:
                self._chan = None
        with contextlib.suppress(Exception):
            chan.close()

    def close(self) -> None:
        self._stop.set()
        # shutdown() wakes the recvfrom() blocked in the other thread, so the port is
        # released now, not when its poll times out.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            chan, self._chan = self._chan, None
        if chan is not None:
            with contextlib.suppress(Exception):
                chan.close()
