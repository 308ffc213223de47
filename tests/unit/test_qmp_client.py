"""QMP client (lima.drivers.qmp) against an in-process fake QMP server; pid-file helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import procs, qmp

Handler = Callable[[dict[str, Any]], list[dict[str, Any]]]


class FakeQMP:
    """Serves one QMP connection at a time; `handler` maps a command to reply lines."""

    def __init__(self, path: Path, handler: Handler, greet: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.greet = greet
        self.received: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                if self.greet:
                    conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
                buf = b""
                while True:
                    try:
                        chunk = conn.recv(4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, _, buf = buf.partition(b"\n")
                        msg = json.loads(line)
                        self.received.append(msg)
                        for reply in self.handler(msg):
                            conn.sendall(json.dumps(reply).encode() + b"\r\n")

    def close(self) -> None:
        self.server.close()


def answer(msg: dict[str, Any]) -> list[dict[str, Any]]:
    cmd, mid = msg["execute"], msg.get("id")
    if cmd == "qmp_capabilities":
        return [{"return": {}, "id": mid}]
    if cmd == "query-status":
        return [
            {"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}},
            {"return": {"status": "running", "running": True}, "id": mid},
        ]
    if cmd == "echo":
        return [{"return": msg.get("arguments", {}), "id": mid}]
    if cmd == "silent":
        return []
    return [{"error": {"class": "CommandNotFound", "desc": f"no {cmd}"}, "id": mid}]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="qmpt-", dir="/tmp"))  # short: sun_path limit
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(sockdir: Path) -> Iterator[FakeQMP]:
    srv = FakeQMP(sockdir / "qmp.sock", answer)
    try:
        yield srv
    finally:
        srv.close()


def test_execute_negotiates_and_returns_the_answer(server: FakeQMP) -> None:
    with qmp.QMPClient(server.path, timeout=2) as client:
        assert "QMP" in client.greeting
        assert client.execute("query-status") == {"status": "running", "running": True}
        assert client.execute("echo", {"a": 1}) == {"a": 1}
        assert [e["event"] for e in client.events] == ["RESUME"]
    assert server.received[0]["execute"] == "qmp_capabilities"


def test_error_answer_raises_qmp_error(server: FakeQMP) -> None:
    with qmp.QMPClient(server.path, timeout=2) as client, pytest.raises(qmp.QMPError) as info:
        client.execute("bogus")
    assert info.value.error_class == "CommandNotFound"
    assert "bogus" in str(info.value)


def test_no_answer_times_out_as_temporary(server: FakeQMP) -> None:
    with qmp.QMPClient(server.path, timeout=2) as client, pytest.raises(qmp.QMPUnavailable):
        client.execute("silent", timeout=0.2)


def test_silent_server_times_out_on_greeting(sockdir: Path) -> None:
    srv = FakeQMP(sockdir / "q2.sock", answer, greet=False)
    try:
        assert qmp.query_status(srv.path, timeout=0.2) is None
    finally:
        srv.close()


def test_query_status(server: FakeQMP, sockdir: Path) -> None:
    assert qmp.query_status(server.path) == "running"
    assert qmp.query_status(sockdir / "missing.sock") is None


def test_missing_socket_is_temporary(sockdir: Path) -> None:
    with pytest.raises(qmp.QMPUnavailable) as info:
        qmp.QMPClient(sockdir / "missing.sock", timeout=0.5).connect()
    assert info.value.delay > 0


def test_powerdown_without_qemu_is_done(sockdir: Path) -> None:
    assert qmp.powerdown(sockdir, timeout=0.1) is True  # no qemu.pid: nothing runs


# ---- pid helpers (no process is started) -------------------------------------------------


def test_read_pid(tmp_path: Path) -> None:
    f = tmp_path / "qemu.pid"
    assert procs.read_pid(f) is None
    f.write_text("1234\n")
    assert procs.read_pid(f) == 1234
    for junk in ("", "abc", "-5", "0"):
        f.write_text(junk)
        assert procs.read_pid(f) is None


def test_pid_alive() -> None:
    assert procs.pid_alive(os.getpid())
    assert not procs.pid_alive(0)
    assert not procs.pid_alive(2**22 + 12345)  # above pid_max: never a process


def test_our_own_pid_is_not_an_instance_qemu(tmp_path: Path) -> None:
    (tmp_path / "qemu.pid").write_text(str(os.getpid()))
    assert not procs.is_instance_qemu(os.getpid(), tmp_path)
    assert procs.qemu_pid(tmp_path) is None
