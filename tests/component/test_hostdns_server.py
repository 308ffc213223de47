"""The host agent's DNS server on a real unix socket, fed the way QEMU's guestfwd chardev
feeds it: one stream carrying length-prefixed queries of many guest connections."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from dnslib import DNSRecord

from lima.drivers.hostagent.dns import DNSServer, HostResolver, ResolverConfig


def _frame(name: str, qtype: str = "A") -> bytes:
    q = DNSRecord.question(name, qtype).pack()
    return struct.pack(">H", len(q)) + q


def _read_answer(sock: socket.socket) -> DNSRecord:
    head = sock.recv(2, socket.MSG_WAITALL)
    body = sock.recv(struct.unpack(">H", head)[0], socket.MSG_WAITALL)
    return DNSRecord.parse(body)


def test_stream_of_queries_answered_in_order(tmp_path: Path) -> None:
    path = tmp_path / "dns.sock"
    server = DNSServer(HostResolver(ResolverConfig("vm", hosts={"a.example": "10.0.0.9"},
                                                   forward=False)), path)
    server.start()
    try:
        assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            # Two queries in one write, then one split across writes.
            s.sendall(_frame("host.lima.internal") + _frame("a.example"))
            first, second = _read_answer(s), _read_answer(s)
            assert [str(r.a.rdata) for r in (first, second)] == ["192.168.5.2", "10.0.0.9"]
            frame = _frame("lima-vm")
            s.sendall(frame[:5])
            s.sendall(frame[5:])
            assert str(_read_answer(s).a.rdata) == "192.168.5.15"
            # Garbage is skipped; the stream goes on.
            s.sendall(struct.pack(">H", 3) + b"bad" + _frame("a.example"))
            assert str(_read_answer(s).a.rdata) == "10.0.0.9"
        # QEMU reconnects (reconnect=1) after a host agent restart: a new connection works.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(_frame("unknown.example"))
            assert _read_answer(s).rr == []
    finally:
        server.stop()
    assert not path.exists()
