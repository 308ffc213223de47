"""UDP and reverse forwards of the port forwarder (lima.drivers.hostagent.portfwd) in
process: the UDP relay (lima.drivers.hostagent.udprelay) runs its guest end as a local
python3 process behind the fake dialer's exec channel, so datagrams really cross it and
answers go back to the client that asked; a guest without python3 is a `failed` event; a
static UDP range is bound before any report; and a reverse forward's ssh child
(lima.drivers.hostagent.reversefwd, here a stand-in program) lives as long as the
forwarder, is restarted when it dies, and ends with stop() and reload()."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import portrules
from lima.drivers.hostagent.portfwd import Forwarder
from lima.drivers.hostagent.reversefwd import ReverseForward, reverse_argv
from lima.drivers.hostagent.udprelay import NO_PYTHON
from lima.schemas.spec import PortForward
from tests.component.test_portfwd import FakeAgent, FakeDialer, free_udp_port, fwd, until


class UDPEchoGuest:
    """A "guest" UDP server on loopback answering each datagram with `name: datagram`."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name.encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
                self.sock.sendto(self.name + b": " + data, addr)
            except OSError:
                return


def udp_ask(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A datagram sent before the guest relay is up is dropped: ask again.
            s.sendto(data, ("127.0.0.1", port))
            try:
                return s.recv(65535)
            except TimeoutError:
                continue
    raise AssertionError(f"no answer on UDP port {port}")


def two_free_udp_ports() -> int:
    """A port P with P and P + 1 free."""
    for _ in range(50):
        port = free_udp_port()
        if port < 65535 and can_bind_udp(port + 1):
            return port
    raise AssertionError("no two neighbouring free UDP ports")


def can_bind_udp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Rig:
    def __init__(self, short: Path, forwards: list[PortForward], *,
                 reverse_ssh: list[str] | None = None) -> None:
        self.agent = FakeAgent(short / "ga.sock")
        self.dialer = FakeDialer()
        self.events: list[dict[str, Any]] = []
        self.fw = Forwarder(portrules.build_rules(forwards, 0), self.dialer,
                            self.events.append, short / "ga.sock", reverse_ssh=reverse_ssh)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []
    short = Path(f"/tmp/pfm-{os.getpid()}-{time.monotonic_ns()}")
    short.mkdir()

    def make(forwards: list[PortForward], **kw: Any) -> Rig:
        r = Rig(short, forwards, **kw)
        r.fw.start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.fw.stop()
        r.agent.close()
    shutil.rmtree(short, ignore_errors=True)


def test_loopback_udp_listener_is_relayed_both_ways(rig: Callable[..., Rig]) -> None:
    guest = UDPEchoGuest("guest")
    host_port = free_udp_port()
    r = rig([fwd(guest_port=guest.port, host_port=host_port, proto="udp")])
    r.agent.send(("udp", "127.0.0.1", guest.port))
    until(lambda: r.of("forwarding"), "the forwarding event")
    assert r.of("forwarding") == [{"type": "forwarding", "protocol": "udp",
                                   "guestAddr": f"127.0.0.1:{guest.port}",
                                   "hostAddr": f"127.0.0.1:{host_port}"}]
    assert udp_ask(host_port, b"one") == b"guest: one"
    # datagram boundaries and binary payloads survive the byte stream
    big = bytes(range(256)) * 200
    assert udp_ask(host_port, big) == b"guest: " + big
    # two clients, each gets its own answers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for s in (a, b):
            s.settimeout(5)
        a.sendto(b"from-a", ("127.0.0.1", host_port))
        b.sendto(b"from-b", ("127.0.0.1", host_port))
        assert a.recv(100) == b"guest: from-a"
        assert b.recv(100) == b"guest: from-b"
    assert len(r.dialer.executed) == 1  # one relay per forward, whatever the clients
    r.agent.send()
    until(lambda: r.of("stopping"), "the stopping event")
    # the host port is free again
    until(lambda: can_bind_udp(host_port), "the host port released")


def test_guest_without_python3_is_a_failed_event(rig: Callable[..., Rig]) -> None:
    host_port = free_udp_port()
    r = rig([fwd(guest_port=5353, host_port=host_port, proto="udp")])
    r.dialer.no_python = True
    r.agent.send(("udp", "127.0.0.1", 5353))
    failed = until(lambda: r.of("failed"), "the failed event")
    assert failed[0]["protocol"] == "udp" and failed[0]["error"] == NO_PYTHON


def test_shell_agent_means_no_relay_is_tried(rig: Callable[..., Rig]) -> None:
    r = rig([fwd(guest_port=5353, host_port=free_udp_port(), proto="udp")])
    r.agent.seq += 1
    r.agent.wait_connection()
    assert r.agent.conn is not None
    r.agent.conn.sendall(b'{"v":1,"agent":"sh","seq":1,"added":[],"removed":[],'
                         b'"ports":[{"proto":"udp","ip":"127.0.0.1","port":5353}]}\n')
    failed = until(lambda: r.of("failed"), "the failed event")
    assert failed[0]["error"] == NO_PYTHON
    assert r.dialer.executed == []


def test_static_udp_range_is_bound_before_any_report(rig: Callable[..., Rig]) -> None:
    first, base = two_free_udp_ports(), two_free_udp_ports()
    for i in range(2):
        UDPEchoGuest(f"g{i}", first + i)
    r = rig([fwd(guest_port_range=(first, first + 1), host_port_range=(base, base + 1),
                 proto="udp", static=True)])
    assert udp_ask(base, b"x") == b"g0: x"
    assert udp_ask(base + 1, b"y") == b"g1: y"
    # a report of the same listeners does not forward them a second time
    r.agent.send(("udp", "127.0.0.1", first), ("udp", "127.0.0.1", first + 1))
    until(lambda: r.fw.reports, "the report")
    assert r.of("failed") == [] and r.fw.forwarded() == {}


# --- reverse ----------------------------------------------------------------------------

# Stands in for `ssh -N -R`: records its argv, then waits (or fails like a refused forward).
FAKE_SSH = """
import os, sys, time
with open(os.environ["FAKE_SSH_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_SSH_FAIL"):
    sys.stderr.write("Error: remote port forwarding failed for listen path /x\\n")
    sys.exit(255)
time.sleep(600)
"""


def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> Path:
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    if fail:
        monkeypatch.setenv("FAKE_SSH_FAIL", "1")
    return log


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_reverse_argv_is_lima_s_ssh_r() -> None:
    argv = reverse_argv(["ssh", "-F", "/i/ssh.config", "lima-dev"], "/run/g.sock",
                        "/tmp/h.sock")
    assert argv[:3] == ["ssh", "-F", "/i/ssh.config"] and argv[-1] == "lima-dev"
    assert argv[argv.index("-R") + 1] == "/run/g.sock:/tmp/h.sock"
    assert "StreamLocalBindUnlink=yes" in argv and "ExitOnForwardFailure=yes" in argv
    assert "-N" in argv and "ControlPath=none" in argv


def test_reverse_forward_lives_with_the_forwarder(rig: Callable[..., Rig], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_ssh(tmp_path, monkeypatch)
    rule = fwd(guest_socket="/run/g.sock", host_socket=str(tmp_path / "h.sock"), reverse=True)
    r = rig([rule], reverse_ssh=[sys.executable, "-c", FAKE_SSH, "lima-x"])
    until(lambda: log.exists() and log.read_text(), "the ssh child")
    assert f"/run/g.sock:{tmp_path / 'h.sock'}" in log.read_text()
    fwd_obj = next(f.fwd for f in r.fw._fixed if f.proto == "reverse")  # type: ignore[attr-defined]
    until(lambda: fwd_obj.proc is not None, "the process")
    pid = fwd_obj.proc.pid
    assert alive(pid)
    # a reload with other rules ends it; the guest socket is removed as Lima does
    r.fw.reload(portrules.build_rules([], 0))
    assert not alive(pid) or os.waitpid(pid, os.WNOHANG) != (0, 0)
    assert ["rm", "-f", "/run/g.sock"] in r.dialer.executed


def test_reverse_forward_ended_by_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(tmp_path, monkeypatch)
    removed: list[str] = []
    fwd_obj = ReverseForward([sys.executable, "-c", FAKE_SSH, "lima-x"], "/run/g.sock",
                             "/tmp/h.sock", remove_guest=removed.append)
    until(lambda: fwd_obj.proc is not None, "the process")
    proc = fwd_obj.proc
    assert proc is not None and proc.poll() is None
    fwd_obj.close()
    assert proc.poll() is not None
    assert removed == ["/run/g.sock"]
    time.sleep(0.3)
    assert fwd_obj.starts == 1  # not started again after close()


def test_refused_reverse_forward_is_failed_once_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(tmp_path, monkeypatch, fail=True)
    failures: list[str] = []
    fwd_obj = ReverseForward([sys.executable, "-c", FAKE_SSH, "lima-x"], "/run/g.sock",
                             "/tmp/h.sock", on_failure=failures.append, pause=0.05)
    try:
        until(lambda: fwd_obj.starts >= 3, "three attempts")
        assert failures == ["Error: remote port forwarding failed for listen path /x"]
    finally:
        fwd_obj.close()
