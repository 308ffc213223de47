"""benchmarks/bootwatch.py: sshd's greeting over a loopback socket, the login and the
result.json phases with `sh` standing in for ssh, and the untimed confirmation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import bootwatch as bw

pytestmark = pytest.mark.unit


class Server:
    """A loopback listener: the first `silent` connections are closed without a word,
    the later ones get `greeting`."""

    def __init__(self, silent: int, greeting: bytes = b"SSH-2.0-OpenSSH_9.2p1\r\n") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.silent, self.greeting, self.accepted = silent, greeting, 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                if self.accepted > self.silent:
                    conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(silent=2)
    yield srv
    srv.close()


def test_result_json_says_done_or_error_and_nothing_when_torn() -> None:
    assert bw.result_status('{"v1": {"datasource": "NoCloud", "errors": []}}') == "done"
    assert bw.result_status('{"v1": {"errors": ["x failed"]}}') == "error"
    assert bw.result_status('{"v1": {"err') is None
    assert bw.result_status("") is None
    assert bw.result_status('{"v2": {}}') is None
    assert bw.cloud_init_says("\nstatus: done\n") == "done"
    assert bw.cloud_init_says("status:") == ""
    assert bw.cloud_init_says("Permission denied") == ""


def test_banner_watch_waits_for_the_greeting(server: Server) -> None:
    watch = bw.BannerWatch(server.port)
    deadline = time.monotonic() + 10
    looks = 0
    while not watch.step(time.monotonic()):
        looks += 1
        assert time.monotonic() < deadline, "no greeting seen"
        time.sleep(0.02)
    assert server.accepted >= 3  # two closed silently, then a greeting
    assert looks > 0 and watch.socks == []


def test_a_port_nobody_listens_on_never_counts() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = int(free.getsockname()[1])
    free.close()
    watch = bw.BannerWatch(port)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert not watch.step(time.monotonic())
        time.sleep(0.02)
    assert len(watch.socks) <= bw.BANNERS_AT_ONCE
    watch.close()


def _fake_ssh(tmp_path: Path, status_word: str) -> object:
    """ssh_argv's stand-in: the guest is tmp_path (nologin, result.json)."""
    def argv(port: int, user: str, key: str, *command: str) -> list[str]:
        if tuple(command) == bw.STATUS:
            return ["sh", "-c", f"echo 'status: {status_word}'"]
        script = " ".join(command[2:]).strip("'").replace("/run/cloud-init", str(tmp_path))
        gate = f"if [ -e {tmp_path}/nologin ]; then rm {tmp_path}/nologin; exit 255; fi; "
        return ["sh", "-c", gate + script]
    return argv


@pytest.mark.processes
@pytest.mark.parametrize(("errors", "says", "status"), [
    ("[]", "done", "done"),
    ('["config-x failed"]', "error", "error"),
    ("[]", "running", "done (cloud-init status: running)"),
])
def test_watch_boot_times_sshd_then_login_then_result_json(
        tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch,
        errors: str, says: str, status: str) -> None:
    monkeypatch.setattr(bw, "ssh_argv", _fake_ssh(tmp_path, says))
    (tmp_path / "nologin").touch()  # the first login is refused

    def finish() -> None:
        time.sleep(1.5)
        part = tmp_path / "result.json.part"
        part.write_text('{"v1": {"errors": ' + errors + '}}')
        part.rename(tmp_path / "result.json")

    threading.Thread(target=finish, daemon=True).start()
    t0 = time.monotonic()
    pts = bw.watch_boot(t0, lambda: (server.port, "u", "k"))
    assert pts.banner is not None and pts.login is not None and pts.done is not None
    assert pts.banner <= pts.login <= pts.done
    assert pts.done >= 1.5  # result.json came last
    assert not (tmp_path / "nologin").exists()  # a refused login came before the first
    assert pts.status == status
    assert pts.returned is None


@pytest.mark.processes
def test_a_failed_start_command_ends_the_watch(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    pts = bw.watch_boot(time.monotonic(), lambda: None, proc)  # type: ignore[arg-type]
    assert pts.status == "start command failed (3)" and pts.done is None
