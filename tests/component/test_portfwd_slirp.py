"""The hostfwd fast path of port forwarding (lima.drivers.hostagent.slirpfwd) with a fake
QEMU monitor: wildcard listeners become hostfwd_add / hostfwd_remove, a busy port is a
`failed` event and no command, a refusal falls back to ssh, loopback listeners never use
it, and forwards left by an earlier host agent are removed at start."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import portrules
from lima.drivers.hostagent.portfwd import Forwarder
from lima.drivers.hostagent.slirpfwd import SlirpForwards
from tests.component.test_portfwd import EchoGuest, FakeAgent, FakeDialer, ask, free_port, until

SSH_PORT = 60022


class FakeMonitor:
    """QEMU's HMP as far as the fast path uses it; a hostfwd_add binds the host port, as
    QEMU does. `refuse` makes hostfwd_add answer with an error text."""

    def __init__(self, stale: tuple[tuple[str, int, int], ...] = ()) -> None:
        self.commands: list[str] = []
        self.bound: dict[str, socket.socket] = {}
        self.refuse = False
        self.stale = list(stale)

    def __call__(self, command: str) -> str:
        self.commands.append(command)
        words = command.split()
        if words[:2] == ["info", "usernet"]:
            rows = [f"  TCP[HOST_FORWARD]  12  {ip}  {hp}  192.168.5.15  {gp}  0  0"
                    for ip, hp, gp in self.stale]
            return "Hub -1 (net0):\n  Protocol[State]  FD  Source Address  Port ...\n" + \
                "\n".join(rows) + "\n"
        if words[0] == "hostfwd_add":
            if self.refuse:
                return "Could not set up host forwarding rule 'x'\r\n"
            host = words[2].split("-")[0]
            proto, ip, port = host.split(":")
            if proto == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((ip, int(port)))
            else:
                s = socket.socket()
                s.bind((ip, int(port)))
                s.listen()
            self.bound[host] = s
        if words[0] == "hostfwd_remove":
            s = self.bound.pop(words[2], None)
            if s is not None:
                s.close()
        return ""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Forwarder, FakeMonitor, Any]]]:
    made: list[tuple[Forwarder, FakeAgent]] = []
    short = Path(f"/tmp/pfs-{os.getpid()}-{len(str(tmp_path))}")
    short.mkdir(exist_ok=True)

    def build(monitor: FakeMonitor, udp: bool = False) -> tuple[Forwarder, FakeMonitor, Any]:
        agent = FakeAgent(short / f"ga{len(made)}.sock")
        events: list[dict[str, Any]] = []
        dialer = FakeDialer()
        fw = Forwarder(portrules.build_rules([], SSH_PORT), dialer, events.append,
                       short / f"ga{len(made)}.sock",
                       slirp=SlirpForwards(monitor, SSH_PORT, udp=udp))
        fw.start()
        made.append((fw, agent))
        return fw, monitor, (agent, events, dialer)

    yield build
    for fw, agent in made:
        fw.stop()
        agent.close()
    import shutil

    shutil.rmtree(short, ignore_errors=True)


def test_wildcard_listener_is_a_hostfwd(make: Callable[..., Any]) -> None:
    port = free_port()
    _fw, monitor, (agent, events, _) = make(FakeMonitor())
    agent.send(("tcp", "0.0.0.0", port))
    until(lambda: events, "the forwarding event")
    assert events == [{"type": "forwarding", "protocol": "tcp", "guestAddr": f"0.0.0.0:{port}",
                       "hostAddr": f"127.0.0.1:{port}"}]
    assert f"hostfwd_add net0 tcp:127.0.0.1:{port}-:{port}" in monitor.commands
    agent.send()
    until(lambda: len(events) == 2, "the stopping event")
    assert events[1]["type"] == "stopping"
    assert monitor.commands[-1] == f"hostfwd_remove net0 tcp:127.0.0.1:{port}"


def test_loopback_listener_goes_over_ssh(make: Callable[..., Any]) -> None:
    guest = EchoGuest("ssh")
    port = free_port()
    _fw, monitor, (agent, events, dialer) = make(FakeMonitor())
    dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    agent.send(("tcp", "127.0.0.1", port))
    until(lambda: events, "the forwarding event")
    assert not any(c.startswith("hostfwd_add") for c in monitor.commands)
    assert ask(port) == "ssh: ping"


def test_busy_port_is_failed_without_asking_qemu(make: Callable[..., Any]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        _fw, monitor, (agent, events, _) = make(FakeMonitor())
        agent.send(("tcp", "::", port))
        until(lambda: events, "the failed event")
        assert events[0]["type"] == "failed"
        assert f"PID {os.getpid()}" in events[0]["error"]
        assert not any(c.startswith("hostfwd_add") for c in monitor.commands)
    finally:
        holder.close()


def test_refused_hostfwd_falls_back_to_ssh(make: Callable[..., Any]) -> None:
    guest = EchoGuest("fallback")
    port = free_port()
    monitor = FakeMonitor()
    monitor.refuse = True
    _fw, _, (agent, events, dialer) = make(monitor)
    dialer.routes[("127.0.0.1", port)] = ("127.0.0.1", guest.port)
    agent.send(("tcp", "0.0.0.0", port))
    until(lambda: events, "the forwarding event")
    assert events[0]["type"] == "forwarding"
    assert ask(port) == "fallback: ping"


def test_stale_forwards_of_an_earlier_agent_are_removed(make: Callable[..., Any]) -> None:
    monitor = FakeMonitor(stale=(("127.0.0.1", SSH_PORT, 22), ("127.0.0.1", 18080, 8080),
                                 ("0.0.0.0", 18443, 443)))
    make(monitor)
    assert monitor.commands == ["info usernet", "hostfwd_remove net0 tcp:127.0.0.1:18080",
                                "hostfwd_remove net0 tcp:0.0.0.0:18443"]


def test_wildcard_udp_listener_is_a_udp_hostfwd_when_unrestricted(
        make: Callable[..., Any]) -> None:
    port = free_port()
    _fw, monitor, (agent, events, dialer) = make(FakeMonitor(), udp=True)
    agent.send(("udp", "0.0.0.0", port))
    until(lambda: events, "the forwarding event")
    assert events == [{"type": "forwarding", "protocol": "udp", "guestAddr": f"0.0.0.0:{port}",
                       "hostAddr": f"127.0.0.1:{port}"}]
    assert f"hostfwd_add net0 udp:127.0.0.1:{port}-:{port}" in monitor.commands
    assert dialer.executed == []  # no relay in the guest
    agent.send()
    until(lambda: len(events) == 2, "the stopping event")
    assert monitor.commands[-1] == f"hostfwd_remove net0 udp:127.0.0.1:{port}"


def test_restricted_network_udp_goes_through_the_relay(make: Callable[..., Any]) -> None:
    # restrict=on: libslirp would drop the guest's answers, so no udp hostfwd is asked for
    port = free_port()
    _fw, monitor, (agent, events, dialer) = make(FakeMonitor(), udp=False)
    agent.send(("udp", "0.0.0.0", port))
    until(lambda: events, "the forwarding event")
    assert events[0]["type"] == "forwarding" and events[0]["protocol"] == "udp"
    assert not any(c.startswith("hostfwd_add") for c in monitor.commands)
    until(lambda: dialer.executed, "the relay start")
    assert dialer.executed[0][1] == "-c"
    assert dialer.executed[0][3:5] == ["127.0.0.1", str(port)]


def test_stale_udp_forwards_are_removed_too() -> None:
    listing = ("  TCP[HOST_FORWARD]  12  127.0.0.1  60022  192.168.5.15  22  0  0\n"
               "  UDP[HOST_FORWARD]  13  127.0.0.1  5353  192.168.5.15  5353  0  0\n")
    commands: list[str] = []

    def monitor(command: str) -> str:
        commands.append(command)
        return listing if command == "info usernet" else ""

    SlirpForwards(monitor, SSH_PORT).remove_stale()
    assert commands == ["info usernet", "hostfwd_remove net0 udp:127.0.0.1:5353"]


def test_connections_qemu_carries_are_counted(make: Callable[..., Any]) -> None:
    """The hostfwd's accepted connections count as open forwarded connections (the
    controller's --suspend-idle); the client's own end, on an ephemeral port, does not."""
    port = free_port()
    fw, _monitor, (agent, events, _) = make(FakeMonitor())
    agent.send(("tcp", "0.0.0.0", port))
    until(lambda: events, "the forwarding event")
    assert fw.open_connections() == 0
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        until(lambda: fw.open_connections() == 1, "the connection counted")
    finally:
        client.close()
    until(lambda: fw.open_connections() == 0, "the closed connection no longer counted")
