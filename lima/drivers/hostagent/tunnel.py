"""How forwarded connections reach the guest: ssh channels, and copying bytes both ways.

Used by the port forwarder (lima.drivers.hostagent.portfwd): for each connection accepted on
a host port or socket it asks a `Dialer` for a stream to the guest end (a TCP address or a
unix socket inside the guest) and `splice()`s the two. `SSHDialer` opens them as channels
on one paramiko connection of its own (`direct-tcpip`, and OpenSSH's
`direct-streamlocal@openssh.com` for guest sockets; exec channels for the UDP relay,
lima.drivers.hostagent.udprelay), logs in lazily and logs in again when
the connection was lost (sshd restarted, guest rebooted), so forwards outlive it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko

from lima.drivers.portrules import join_host_port
from lima.errors import TemporaryError

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_WINDOW = 8 * 1024 * 1024  # per channel: one round trip must not cap a forwarded stream
_STREAMLOCAL = "direct-streamlocal@openssh.com"


@dataclass(frozen=True)
class GuestEnd:
    """The guest side of a forward: a TCP address (`ip`, `port`) or a unix socket path."""

    ip: str = ""
    port: int = 0
    socket: str = ""

    def text(self) -> str:
        return self.socket or join_host_port(self.ip, self.port)


class Stream(Protocol):
    """The part of socket.socket and paramiko.Channel that splice() uses."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> Any: ...
    def close(self) -> None: ...


class Dialer(Protocol):
    def open(self, end: GuestEnd) -> Stream:
        """A stream to `end` in the guest; raises OSError or TemporaryError."""

    def execute(self, command: str) -> Any:
        """An exec channel running `command` in the guest (stdin/stdout are the channel;
        recv_exit_status() and recv_stderr() as paramiko.Channel has them)."""

    def close(self) -> None:
        """Drop connections (the forwarder stops)."""

    def warm(self) -> None:
        """Get ready to open streams (log in) before the first one is asked for."""


class _Transport(paramiko.Transport):
    """paramiko opens only the channel kinds it knows with their fields; OpenSSH's
    direct-streamlocal needs the socket path (plus two reserved fields) after the common
    ones, so they are appended to that one message on its way out."""

    _path_local = threading.local()

    def open_streamlocal(self, path: str, timeout: float) -> paramiko.Channel:
        self._path_local.path = path
        try:
            return self.open_channel(_STREAMLOCAL, timeout=timeout, window_size=_WINDOW)
        finally:
            self._path_local.path = None

    def _send_user_message(self, data: Any) -> None:  # paramiko's private send hook
        path = getattr(self._path_local, "path", None)
        if path is not None and isinstance(data, paramiko.Message):
            raw = data.asbytes()
            if raw[:1] == bytes([90]) and _STREAMLOCAL.encode() in raw[:64]:  # CHANNEL_OPEN
                data.add_string(path)
                data.add_string("")
                data.add_int(0)
                self._path_local.path = None
        super()._send_user_message(data)  # type: ignore[misc]


def _new_transport(sock: Any, **kwargs: Any) -> _Transport:
    return _Transport(sock, disabled_algorithms=kwargs.get("disabled_algorithms"))


class SSHDialer:
    """Channels on a paramiko connection of the forwarder's own to 127.0.0.1:`port`."""

    def __init__(self, port: int, user: str, key_path: Path, *, login_timeout: float = 60.0,
                 open_timeout: float = 20.0) -> None:
        self.port, self.user, self.key_path = port, user, key_path
        self.login_timeout, self.open_timeout = login_timeout, open_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _transport(self, fresh: bool) -> _Transport:
        with self._lock:
            if self._closed:
                raise TemporaryError("the forwarder is stopping")
            client = self._client
            transport = client.get_transport() if client is not None else None
            if fresh or transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                self._client = None
                self._client = self._login()
                transport = self._client.get_transport()
            assert isinstance(transport, _Transport)
            return transport

    def _login(self) -> paramiko.SSHClient:
        from lima.drivers.sshprobe import banner_socket

        deadline = time.monotonic() + self.login_timeout
        last: Exception | None = None
        while time.monotonic() < deadline and not self._closed:
            try:
                # One prober until the banner (closing probes every few seconds would kill
                # each sshd the guest had forked for them); a stopping forwarder cancels it.
                # While the host agent's readiness check probes, this waits for its answer;
                # once that saw the banner, this opens one probe, not a burst. The login
                # then goes over the connection that showed the banner.
                sock = banner_socket(self.port, deadline=deadline,
                                     cancelled=lambda: self._closed)
            except TemporaryError as exc:
                last = exc
                continue
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            try:
                client.connect("127.0.0.1", port=self.port, username=self.user,
                               key_filename=str(self.key_path), look_for_keys=False,
                               allow_agent=False, timeout=self.open_timeout,
                               banner_timeout=self.open_timeout, auth_timeout=self.open_timeout,
                               transport_factory=_new_transport, sock=sock)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                if sock is not None:
                    sock.close()
                last = exc
                time.sleep(0.3)
                continue
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)
            log.info("port forwarder: logged in to the guest over ssh")
            return client
        raise TemporaryError(f"port forwarder: no ssh login on 127.0.0.1:{self.port}: {last}")

    def open(self, end: GuestEnd) -> Stream:
        for attempt in (0, 1):
            transport = self._transport(fresh=attempt == 1)
            try:
                if end.socket:
                    return transport.open_streamlocal(end.socket, self.open_timeout)
                return transport.open_channel("direct-tcpip", (end.ip, end.port),
                                              ("127.0.0.1", 0), window_size=_WINDOW,
                                              timeout=self.open_timeout)
            except paramiko.ChannelException as exc:
                raise OSError(f"the guest refused {end.text()}: {exc.text}") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # A dead connection: log in again once (sshd restarted, guest rebooted).
                log.info("port forwarder: ssh connection lost (%s); logging in again", exc)
        raise TemporaryError(f"cannot open {end.text()} in the guest over ssh")

    def execute(self, command: str) -> paramiko.Channel:
        for attempt in (0, 1):
            transport = self._transport(fresh=attempt == 1)
            try:
                chan = transport.open_session(window_size=_WINDOW, timeout=self.open_timeout)
            except paramiko.ChannelException as exc:
                raise OSError(f"the guest refused a session: {exc.text}") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.info("port forwarder: ssh connection lost (%s); logging in again", exc)
                continue
            chan.exec_command(command)
            return chan
        raise TemporaryError("cannot start a command in the guest over ssh")

    def warm(self) -> None:
        """Log in now, however long the guest takes to boot (until close()): the first
        forwarded connection must not wait for it."""
        while not self._closed:
            try:
                self._transport(fresh=False)
                return
            except (TemporaryError, paramiko.SSHException, OSError, EOFError) as exc:
                log.debug("port forwarder: no ssh login yet (%s)", exc)
                time.sleep(1.0)

    def close(self) -> None:
        self._closed = True  # before the lock: a login in progress gives up at once
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _shutdown_write(stream: Stream) -> None:
    if isinstance(stream, paramiko.Channel):
        stream.shutdown_write()
    elif isinstance(stream, socket.socket):
        stream.shutdown(socket.SHUT_WR)


def splice(a: Stream, b: Stream, on_done: Any = None) -> None:
    """Copy a->b and b->a on two daemon threads; close both once both directions ended."""
    left = [2]
    lock = threading.Lock()

    def pump(src: Stream, dst: Stream) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                _shutdown_write(dst)
        except (OSError, EOFError, paramiko.SSHException):
            # One side died: the whole connection is over.
            for s in (a, b):
                with contextlib.suppress(Exception):
                    s.close()
        finally:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                for s in (a, b):
                    with contextlib.suppress(Exception):
                        s.close()
                if on_done is not None:
                    on_done()

    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=pump, args=(src, dst), name="portfwd-pump",
                         daemon=True).start()
