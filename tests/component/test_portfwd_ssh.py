"""The ssh dialer of the port forwarder (lima.drivers.hostagent.tunnel.SSHDialer) against an
in-process paramiko sshd that serves direct-tcpip: streams reach the "guest" address, and
a connection the sshd dropped (restarted, guest rebooted) is replaced by a new login."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from lima.drivers.hostagent.tunnel import GuestEnd, SSHDialer, splice
from tests.component.test_portfwd import EchoGuest


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        return paramiko.OPEN_SUCCEEDED


class FakeSSHD:
    def __init__(self) -> None:
        self.key = paramiko.ECDSAKey.generate()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            # One thread per connection: the dialer's banner probes never log in.
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        t = paramiko.Transport(conn)
        t.add_server_key(self.key)
        try:
            t.start_server(server=_Server())
        except (paramiko.SSHException, EOFError, OSError):
            return
        self.transports.append(t)
        while t.is_active():
            chan = t.accept(0.5)
            if chan is None:
                continue
            # every stream goes to the one "guest" server of the test
            splice(chan, socket.create_connection(self.guest))

    guest: tuple[str, int] = ("127.0.0.1", 0)

    def drop_all(self) -> None:
        for t in self.transports:
            t.close()

    def close(self) -> None:
        self.sock.close()
        self.drop_all()


@pytest.fixture
def sshd() -> Iterator[FakeSSHD]:
    server = FakeSSHD()
    yield server
    server.close()


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "id"
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    return path


def roundtrip(stream: object, text: bytes) -> bytes:
    stream.sendall(text)  # type: ignore[attr-defined]
    data = b""
    while not data.endswith(b"\n"):
        chunk = stream.recv(100)  # type: ignore[attr-defined]
        if not chunk:
            break
        data += chunk
    return data


def test_streams_reach_the_guest_and_survive_a_dropped_connection(
        sshd: FakeSSHD, tmp_path: Path) -> None:
    echo = EchoGuest("guest")
    sshd.guest = ("127.0.0.1", echo.port)
    dialer = SSHDialer(sshd.port, "lima", _key(tmp_path), login_timeout=10)
    try:
        dialer.warm()
        assert len(sshd.transports) == 1  # logged in ahead of the first stream
        stream = dialer.open(GuestEnd(ip="127.0.0.1", port=8080))
        assert roundtrip(stream, b"one\n") == b"guest: one\n"
        stream.close()
        sshd.drop_all()  # sshd restarted: the connection is gone
        stream = dialer.open(GuestEnd(ip="127.0.0.1", port=8080))
        assert roundtrip(stream, b"two\n") == b"guest: two\n"
        assert len(sshd.transports) == 2  # a new login
        stream.close()
    finally:
        dialer.close()


def test_a_closed_dialer_refuses_and_stops_waiting(tmp_path: Path) -> None:
    dialer = SSHDialer(1, "lima", _key(tmp_path), login_timeout=30)
    dialer.close()
    with pytest.raises(Exception, match="stopping"):
        dialer.open(GuestEnd(ip="127.0.0.1", port=80))
