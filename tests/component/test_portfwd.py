"""The host side of port forwarding (lima.drivers.hostagent.portfwd) against a fake guest
agent stream on ga.sock and a fake dialer that reaches "guest" servers on this host's
loopback: forwards follow the reports, Lima's events are emitted, a busy port is a
`failed` event naming its holder, static and socket forwards exist before any report, and
a lost agent connection re-syncs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import portrules, runner
from lima.drivers.hostagent.portfwd import Forwarder, parse_report
from lima.drivers.hostagent.tunnel import GuestEnd, Stream
from lima.drivers.portrules import Listener
from lima.schemas.spec import PortForward

WAIT = 5.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeAgent:
    """ga.sock as QEMU serves it: a unix socket server; `send()` writes one report line to
    the connected host agent; `drop()` closes that connection."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.conn: socket.socket | None = None
        self.connections = 0
        self.seq = 0

    def wait_connection(self) -> socket.socket:
        self.server.settimeout(WAIT)
        conn, _ = self.server.accept()
        self.conn = conn
        self.connections += 1
        return conn

    def send(self, *ports: tuple[str, str, int]) -> None:
        if self.conn is None:
            self.wait_connection()
        assert self.conn is not None
        self.seq += 1
        line = {"v": 1, "agent": "test", "seq": self.seq, "added": [], "removed": [],
                "ports": [{"proto": p, "ip": ip, "port": n} for p, ip, n in ports]}
        self.conn.sendall(json.dumps(line).encode() + b"\n")

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self.server.close()


class EchoGuest:
    """A "guest" TCP server on loopback answering each line with `name: line`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            for line in f:
                conn.sendall(self.name.encode() + b": " + line)


class FakeDialer:
    """Reaches the guest end through a table: (ip, port) or a socket path -> a local
    address. `fail_next` makes the next opens raise, like a lost ssh connection."""

    def __init__(self) -> None:
        self.routes: dict[Any, Any] = {}
        self.opened: list[GuestEnd] = []
        self.fail_next = 0
        self.closed = False
        self.warmed = False
        self.executed: list[list[str]] = []
        self.no_python = False

    def open(self, end: GuestEnd) -> Stream:
        self.opened.append(end)
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("ssh connection lost")
        key = end.socket or (end.ip, end.port)
        where = self.routes[key]
        family = socket.AF_UNIX if isinstance(where, str) else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect(where)
        return s

    def execute(self, command: str) -> ProcChannel:
        """The command run on this host, as the guest would run it in an exec channel
        (`python3` is this interpreter; a missing program exits 127 like a shell's)."""
        argv = shlex.split(command)
        self.executed.append(list(argv))
        if argv[0] == "python3" and not self.no_python:
            argv[0] = sys.executable
        else:
            argv = [sys.executable, "-c", "import sys; sys.exit(127)"]
        return ProcChannel(runner.spawn(argv, stdin=runner.PIPE, stdout=runner.PIPE,
                                        stderr=runner.PIPE))

    def close(self) -> None:
        self.closed = True

    def warm(self) -> None:
        self.warmed = True


class ProcChannel:
    """A local process behind the part of paramiko.Channel the UDP relay uses."""

    def __init__(self, proc: runner.Popen[bytes]) -> None:
        self.proc = proc

    def recv(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read1(n)

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_exit_status(self) -> int:
        return self.proc.wait()

    def recv_stderr(self, n: int) -> bytes:
        assert self.proc.stderr is not None
        return self.proc.stderr.read(n)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def ask(port: int, text: str = "ping") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(text.encode() + b"\n")
        return s.makefile("rb").readline().decode().strip()


def ask_unix(path: str, text: str = "ping") -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(path)
        s.sendall(text.encode() + b"\n")
        return s.makefile("rb").readline().decode().strip()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def until(cond: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def fwd(**kw: Any) -> PortForward:
    kw.setdefault("proto", "tcp")
    kw.setdefault("guest_ip", "127.0.0.1")
    kw.setdefault("guest_ip_must_be_zero", kw["guest_ip"] == "0.0.0.0")
    kw.setdefault("host_ip", "127.0.0.1")
    return PortForward(**kw)


class Rig:
    def __init__(self, tmp: Path, forwards: list[PortForward]) -> None:
        self.agent = FakeAgent(tmp / "ga.sock")
        self.dialer = FakeDialer()
        self.events: list[dict[str, Any]] = []
        tcp, udp = portrules.ignored_protocols(forwards)
        self.fw = Forwarder(portrules.build_rules(forwards, 0), self.dialer, self.events.append,
                            tmp / "ga.sock", ignore_tcp=tcp, ignore_udp=udp)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[[list[PortForward]], Rig]]:
    rigs: list[Rig] = []
    # A short directory: unix socket paths are limited to 108 bytes.
    short = Path(f"/tmp/pfc-{os.getpid()}-{time.monotonic_ns()}")
    short.mkdir()

    def make(forwards: list[PortForward]) -> Rig:
        d = short / str(len(rigs))
        d.mkdir()
        rig = Rig(d, forwards)
        rigs.append(rig)
        rig.fw.start()
        return rig

    yield make
    for rig in rigs:
        rig.fw.stop()
        rig.agent.close()
    import shutil

    shutil.rmtree(short, ignore_errors=True)


def test_listener_added_then_removed(rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    guest = EchoGuest("guest")
    port = free_port()
    rig = rig_factory([fwd(guest_port=port, host_port=port)])
    rig.dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "127.0.0.1", port))
    until(lambda: rig.of("forwarding"), "the forwarding event")
    assert rig.of("forwarding") == [{"type": "forwarding", "protocol": "tcp",
                                     "guestAddr": f"127.0.0.1:{port}",
                                     "hostAddr": f"127.0.0.1:{port}"}]
    assert ask(port, "hello") == "guest: hello"
    assert ask(port, "again") == "guest: again"  # every connection is carried

    rig.agent.send()  # the listener is gone
    until(lambda: rig.of("stopping"), "the stopping event")
    assert rig.of("stopping")[0]["guestAddr"] == f"127.0.0.1:{port}"
    assert until(lambda: refused(port), "the host port to close")


def test_wildcard_listener_is_reached_on_guest_loopback(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    guest = EchoGuest("v6")
    port = free_port()
    rig = rig_factory([fwd(guest_port=port, host_port=port)])
    rig.dialer.routes[("::1", port)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "::", port))
    until(lambda: rig.of("forwarding"), "the forwarding event")
    assert ask(port) == "v6: ping"
    assert rig.dialer.opened[-1] == GuestEnd(ip="::1", port=port)
    assert rig.of("forwarding")[0]["guestAddr"] == f"[::]:{port}"


def test_not_forwarded_and_ignored(rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    rig = rig_factory([fwd(guest_port=7001, ignore=True)])
    udp = free_udp_port()
    rig.agent.send(("tcp", "127.0.0.53", 53), ("tcp", "127.0.0.1", 7001),
                   ("udp", "127.0.0.1", udp))
    until(lambda: len(rig.events) >= 3, "three events")
    time.sleep(0.1)
    by_addr = {e["guestAddr"]: e for e in rig.events}
    assert len(rig.events) == 3
    assert by_addr["127.0.0.53:53"] == {"type": "not-forwarding", "protocol": "tcp",
                                        "guestAddr": "127.0.0.53:53"}
    # an ignore rule is a "not-forwarding" too (Lima: no host address)
    assert by_addr["127.0.0.1:7001"]["type"] == "not-forwarding"
    # UDP matches Lima's fallback rule (proto "any"): forwarded, through the relay
    assert by_addr[f"127.0.0.1:{udp}"] == {"type": "forwarding", "protocol": "udp",
                                           "guestAddr": f"127.0.0.1:{udp}",
                                           "hostAddr": f"127.0.0.1:{udp}"}


def test_leading_ignore_rule_silences_not_forwarding(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    rig = rig_factory([fwd(guest_ip="0.0.0.0", guest_ip_must_be_zero=False, proto="any",
                           ignore=True)])
    rig.agent.send(("tcp", "127.0.0.1", 7002), ("udp", "0.0.0.0", 68))
    until(lambda: rig.fw.reports, "the report")
    time.sleep(0.2)
    assert rig.events == []
    assert rig.fw.forwarded() == {}


def test_busy_host_port_is_a_failed_event_naming_the_holder(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        rig = rig_factory([])
        rig.agent.send(("tcp", "127.0.0.1", port))
        failed = until(lambda: rig.of("failed"), "the failed event")
        assert failed[0]["hostAddr"] == f"127.0.0.1:{port}"
        assert "already in use" in failed[0]["error"]
        assert f"PID {os.getpid()}" in failed[0]["error"]
        # the forwarder keeps working for other ports
        guest = EchoGuest("next")
        other = free_port()
        rig.dialer.routes[("127.0.0.1", other)] = ("127.0.0.1", guest.port)
        rig.agent.send(("tcp", "127.0.0.1", port), ("tcp", "127.0.0.1", other))
        until(lambda: rig.of("forwarding"), "the next forward")
        assert ask(other) == "next: ping"
    finally:
        holder.close()


def test_static_forward_is_up_before_any_report(
        rig_factory: Callable[[list[PortForward]], Rig], tmp_path: Path) -> None:
    guest = EchoGuest("static")
    port = free_port()
    rig = rig_factory([fwd(guest_port=port, host_port=port, static=True)])
    rig.dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    # no agent connection, no report: the port answers already
    assert ask(port) == "static: ping"
    assert rig.of("forwarding")[0]["hostAddr"] == f"127.0.0.1:{port}"
    # a report of the same port does not forward it a second time (or fail on the bind)
    rig.agent.send(("tcp", "0.0.0.0", port))
    until(lambda: rig.fw.reports, "the report")
    assert len(rig.of("forwarding")) == 1 and rig.of("failed") == []
    # and its disappearance does not close the static forward
    rig.agent.send()
    until(lambda: rig.fw.reports >= 2, "the second report")
    assert ask(port) == "static: ping"


def test_guest_socket_to_host_socket_and_to_host_port(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    short = Path(f"/tmp/pfs-{os.getpid()}")
    short.mkdir(exist_ok=True)
    guest_sock = short / "guest.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(guest_sock))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline()
                conn.sendall(b"unix: " + line)

    threading.Thread(target=serve, daemon=True).start()
    host_sock = short / "sub" / "host.sock"
    port = free_port()
    try:
        rig = rig_factory([fwd(guest_socket="/run/app.sock", host_socket=str(host_sock)),
                           fwd(guest_socket="/run/app.sock", host_port=port)])
        rig.dialer.routes["/run/app.sock"] = str(guest_sock)
        assert ask_unix(str(host_sock)) == "unix: ping"
        assert ask(port) == "unix: ping"
        rig.fw.stop()
        assert not host_sock.exists()  # the host socket is removed at stop
    finally:
        server.close()
        import shutil

        shutil.rmtree(short, ignore_errors=True)


def test_lost_agent_connection_resyncs(rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    guest = EchoGuest("g")
    a, b = free_port(), free_port()
    rig = rig_factory([])
    rig.dialer.routes[("127.0.0.1", a)] = ("127.0.0.1", guest.port)
    rig.dialer.routes[("127.0.0.1", b)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "127.0.0.1", a))
    until(lambda: rig.of("forwarding"), "the first forward")
    rig.agent.drop()  # the host agent's connection to ga.sock is lost ...
    rig.agent.wait_connection()  # ... and made again
    assert rig.agent.connections == 2
    # the forward survived the gap; the next report is the truth
    assert ask(a) == "g: ping"
    rig.agent.send(("tcp", "127.0.0.1", b))
    until(lambda: rig.of("stopping"), "a's stopping event")
    assert until(lambda: refused(a), "a to close")
    # a's stopping event goes out before b is bound (removals first, in one apply)
    until(lambda: len(rig.of("forwarding")) == 2, "b's forwarding event")
    assert ask(b) == "g: ping"


def test_lost_ssh_connection_only_fails_that_connection(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    guest = EchoGuest("g")
    port = free_port()
    rig = rig_factory([])
    rig.dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "127.0.0.1", port))
    until(lambda: rig.of("forwarding"), "the forward")
    rig.dialer.fail_next = 1
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"x\n")
        try:
            answer = s.recv(10)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # that connection is dropped ...
    assert ask(port) == "g: ping"  # ... the forward stays


def test_dual_stack_listeners_share_the_host_port(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    guest = EchoGuest("g")
    port = free_port()
    rig = rig_factory([])
    rig.dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    rig.dialer.routes[("::1", port)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "0.0.0.0", port), ("tcp", "::", port))
    until(lambda: rig.of("forwarding"), "the forward")
    time.sleep(0.1)
    assert len(rig.of("forwarding")) == 1 and rig.of("failed") == []
    rig.agent.send(("tcp", "::", port))  # 0.0.0.0 went away; :: still wants the port
    until(lambda: len(rig.of("forwarding")) == 2, "the forward of ::")
    assert ask(port) == "g: ping"


def test_stop_closes_everything(rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    port = free_port()
    rig = rig_factory([fwd(guest_port=port, host_port=port, static=True)])
    assert not refused(port)
    time.sleep(0.3)
    assert not rig.dialer.warmed  # no login ahead while the guest boots...
    rig.fw.guest_running()
    assert until(lambda: rig.dialer.warmed, "the dialer to log in ahead")  # ...then at once
    rig.fw.stop()
    assert refused(port)
    assert rig.dialer.closed


@pytest.mark.parametrize("line", [b"", b"garbage\n", b'{"v": 2, "ports": []}\n',
                                  b'{"v": 1}\n', b'[1, 2]\n'])
def test_parse_report_ignores_what_is_not_a_report(line: bytes) -> None:
    assert parse_report(line) is None


def test_parse_report_normalizes_addresses_and_skips_bad_entries() -> None:
    line = json.dumps({"v": 1, "ports": [
        {"proto": "tcp", "ip": "0000:0000:0000:0000:0000:0000:0000:0001", "port": 80},
        {"proto": "tcp", "ip": "::ffff:127.0.0.1", "port": 81},
        {"proto": "sctp", "ip": "127.0.0.1", "port": 82},
        {"proto": "tcp", "ip": "not-an-ip", "port": 83},
        {"proto": "udp", "ip": "127.0.0.1", "port": "84"},
    ]})
    assert parse_report(line) == {Listener("tcp", "::1", 80), Listener("tcp", "127.0.0.1", 81)}


def test_host_agent_writes_port_forward_events_on_the_current_status(tmp_path: Path) -> None:
    from lima.drivers.hostagent.daemon import HostAgent
    from lima.drivers.hostagent.events import read_events

    class NoGuest:
        def ready(self, stop: threading.Event, progress: Callable[[str], None]) -> list[str]:
            return []

        def close(self) -> None:
            pass

        def alive(self, timeout: float) -> bool:
            return True

    agent = HostAgent(tmp_path, ssh_port=2222, qemu_argv=["true"], guest=NoGuest())
    agent._state.update(running=True, degraded=True, errors=["a mount failed"])
    agent._emit_port_forward({"type": "forwarding", "protocol": "tcp",
                              "guestAddr": "127.0.0.1:80", "hostAddr": "127.0.0.1:80"})
    (event,) = read_events(tmp_path)
    assert event["status"]["portForward"]["type"] == "forwarding"
    # the event repeats the current status, so readers of the last event lose nothing
    assert event["status"]["running"] is True
    assert event["status"]["errors"] == ["a mount failed"]
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "ha.stdout.log").unlink()


def test_reload_makes_the_forwards_again_from_new_rules(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    """A live change of portForwards (SIGHUP to the host agent): a static forward moves to
    its new host port, a listener the new rules send elsewhere follows, and the same rules
    again change nothing."""
    guest = EchoGuest("guest")
    static_old, static_new, dyn, dyn_host = free_port(), free_port(), free_port(), free_port()
    rig = rig_factory([fwd(guest_port=static_old, host_port=static_old, static=True)])
    rig.dialer.routes[("127.0.0.1", static_old)] = ("127.0.0.1", guest.port)
    rig.dialer.routes[("127.0.0.1", static_new)] = ("127.0.0.1", guest.port)
    rig.dialer.routes[("127.0.0.1", dyn)] = ("127.0.0.1", guest.port)
    rig.agent.send(("tcp", "127.0.0.1", dyn))
    until(lambda: rig.fw.forwarded(), "the dynamic forward")
    assert ask(static_old) == "guest: ping" and ask(dyn) == "guest: ping"

    new = [fwd(guest_port=static_new, host_port=static_new, static=True),
           fwd(guest_port=dyn, host_port=dyn_host)]
    assert rig.fw.reload(portrules.build_rules(new, 0))
    assert until(lambda: refused(static_old), "the old static port to close")
    assert ask(static_new) == "guest: ping"
    # The listener the guest reported before is forwarded by the new rule, no new report.
    assert rig.fw.forwarded() == {f"127.0.0.1:{dyn}": f"127.0.0.1:{dyn_host}"}
    assert ask(dyn_host) == "guest: ping" and until(lambda: refused(dyn), "the old port")
    assert not rig.fw.reload(portrules.build_rules(new, 0))  # nothing changed


def test_open_connections_are_counted_while_they_last(
        rig_factory: Callable[[list[PortForward]], Rig]) -> None:
    """What the controller's --suspend-idle reads (`openConnections` in /v1/info)."""
    guest = EchoGuest("count")
    port = free_port()
    rig = rig_factory([fwd(guest_port=port, host_port=port, static=True)])
    rig.dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    assert rig.fw.open_connections() == 0
    a = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    b = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    until(lambda: rig.fw.open_connections() == 2, "two open connections")
    a.close()
    until(lambda: rig.fw.open_connections() == 1, "one connection closed")
    b.close()
    until(lambda: rig.fw.open_connections() == 0, "both closed")
    rig.dialer.fail_next = 1  # a connection the guest end refuses is not left counted
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as c:
        assert c.recv(1) == b""
    assert rig.fw.open_connections() == 0
