"""The fast path of port forwarding: QEMU's own user-network forward (`hostfwd`), added and
removed at run time through QMP.

Used by the port forwarder (lima.drivers.hostagent.portfwd) for guest listeners on a
wildcard address (0.0.0.0, ::): those are reachable on the guest's NIC, so slirp can carry
the connection itself, at the speed of the ssh port's own forward and with no ssh
encryption on either side (in a TCG guest the guest's sshd is what limits an ssh-carried
stream). Listeners on a guest loopback address cannot be reached that way and go over ssh.

Each forward is `hostfwd_add net0 tcp:HOSTIP:HOSTPORT-:GUESTPORT` (or `udp:`; HMP through
QMP's human-monitor-command); QEMU binds the host address. UDP goes this way only when the
user network is not `restrict=on` (`udp=True`): libslirp drops every datagram a restricted
guest sends, answers included, so those go through lima.drivers.hostagent.udprelay. A host
agent that died leaves its forwards in QEMU: `remove_stale()` (at start) drops every one
but the ssh port's. `established_on` counts the connections QEMU carries on them (for the
controller's idle check).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from lima.drivers.portrules import HostTarget
from lima.errors import LimaError

log = logging.getLogger(__name__)

NETDEV = "net0"  # the -netdev id of lima.drivers.qemu._net_args
# `info usernet`: "  TCP[HOST_FORWARD]  13       127.0.0.1 60022    192.168.5.15    22 ..."
_HOSTFWD = re.compile(r"(TCP|UDP)\[HOST_FORWARD\]\s+-?\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)")

Monitor = Callable[[str], str]  # one HMP command line -> its output


def qmp_monitor(qmp_sock: Path, timeout: float = 5.0) -> Monitor:
    """HMP commands through QEMU's QMP socket, one short session each (the socket serves
    one client at a time; `limactl stop` must still get its turn)."""
    lock = threading.Lock()

    def run(command: str) -> str:
        from lima.drivers.qmp import QMPClient

        with lock, QMPClient(qmp_sock, timeout=timeout) as qmp:
            out = qmp.execute("human-monitor-command", {"command-line": command})
        return str(out or "")

    return run


_ESTABLISHED = "01"  # TCP_ESTABLISHED in /proc/net/tcp's st column
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def established_on(ports: set[int], tables: tuple[str, ...] = TCP_TABLES) -> int:
    """Open TCP connections whose local port is one of `ports`: the connections QEMU
    accepted on its hostfwds (the host agent never sees them; a client's own end has an
    ephemeral local port, so it is not counted)."""
    if not ports:
        return 0
    n = 0
    for table in tables:
        try:
            with open(table, encoding="ascii", errors="replace") as f:
                next(f, None)  # the header
                for line in f:
                    cols = line.split()
                    if len(cols) < 4 or cols[3] != _ESTABLISHED:
                        continue
                    port = cols[1].rpartition(":")[2]
                    with contextlib.suppress(ValueError):
                        n += int(port, 16) in ports
        except OSError:
            continue
    return n


class SlirpForward:
    """One hostfwd; close() removes it (what portfwd's forwards all offer)."""

    def __init__(self, owner: SlirpForwards, target: HostTarget, guest_port: int,
                 proto: str = "tcp") -> None:
        self.owner, self.target, self.guest_port = owner, target, guest_port
        self.proto = proto

    def close(self) -> None:
        self.owner.remove(self.target, self.proto)


def hostfwd_rule(proto: str, target: HostTarget, guest_port: int | None = None) -> str:
    """`tcp:127.0.0.1:8080-:80` (hostfwd_add) or, without a guest port, `tcp:127.0.0.1:8080`
    (hostfwd_remove)."""
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    rule = f"{proto}:{host}:{target.port}"
    return rule if guest_port is None else f"{rule}-:{guest_port}"


class SlirpForwards:
    def __init__(self, monitor: Monitor, ssh_port: int, *, udp: bool = False) -> None:
        self.monitor = monitor
        self.ssh_port = ssh_port
        self.udp = udp  # whether UDP can go this way (the network is not restrict=on)

    def remove_stale(self) -> None:
        """Drop every hostfwd but the ssh port's (left by an earlier host agent)."""
        try:
            listing = self.monitor("info usernet")
        except (LimaError, OSError) as exc:
            log.info("cannot list QEMU's forwards: %s", exc)
            return
        for proto, ip, host_port, guest_port in _HOSTFWD.findall(listing):
            if proto == "TCP" and int(host_port) == self.ssh_port and int(guest_port) == 22:
                continue
            log.info("removing the stale %s forward %s:%s of an earlier host agent", proto,
                     ip, host_port)
            with contextlib.suppress(LimaError, OSError):
                self.monitor(f"hostfwd_remove {NETDEV} {proto.lower()}:{ip}:{host_port}")

    def add(self, target: HostTarget, guest_port: int, proto: str = "tcp") -> SlirpForward:
        """Forward `target` to the guest's port; OSError when the address cannot be bound
        (checked by binding it first: QEMU's own message does not say why), LimaError when
        QEMU refuses."""
        family = socket.AF_INET6 if ":" in target.ip else socket.AF_INET
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((target.ip, target.port))
        out = self.monitor(f"hostfwd_add {NETDEV} {hostfwd_rule(proto, target, guest_port)}")
        if out.strip():
            # HMP reports failures as text ("Could not set up host forwarding rule ...").
            raise LimaError(f"QEMU refused the forward of {target.text()}: {out.strip()}")
        return SlirpForward(self, target, guest_port, proto)

    def remove(self, target: HostTarget, proto: str = "tcp") -> None:
        try:
            self.monitor(f"hostfwd_remove {NETDEV} {hostfwd_rule(proto, target)}")
        except (LimaError, OSError) as exc:
            log.info("cannot remove the forward of %s: %s", target.text(), exc)
