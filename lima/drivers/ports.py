"""Host ports for an instance's ssh forward: pick one, and name whoever holds a busy one.

Called by the controller's driver when it builds the seed of a boot (through
`lima.drivers.hostagent.pick_ssh_port`) and by `limactl hostagent` when it is given no
port. The port picked here is the one qemu's `hostfwd=tcp:127.0.0.1:PORT-:22` binds a
moment later, so the check binds the way qemu does (SO_REUSEADDR).

Linux only for the holder lookup: the listening socket's inode comes from
/proc/net/tcp{,6}, its owner from the `socket:[INODE]` links in /proc/PID/fd.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lima.errors import PermanentError, TemporaryError

LOCALHOST = "127.0.0.1"
# /proc/net/tcp state codes (include/net/tcp_states.h).
_LISTEN = "0A"
_TIME_WAIT = "06"
# Addresses whose listener keeps 127.0.0.1:PORT from being bound.
_CONFLICTING = {"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1"}
_MAX_COMMAND = 100  # characters of a holder's command line shown in a message


@dataclass(frozen=True)
class PortHolder:
    """A process (or, when `pid` is None, a socket whose process we cannot see) that
    holds a TCP port."""

    pid: int | None
    uid: int
    command: str
    listening: bool

    def describe(self) -> str:
        if self.pid is not None:
            return f"PID {self.pid} ({self.command})" if self.command else f"PID {self.pid}"
        return f"another user's process ({_user_name(self.uid)})"


def pick_ssh_port(preferred: int = 0) -> int:
    """`preferred` when it can be bound on 127.0.0.1, else PermanentError naming the
    process that holds it; with 0, a free port chosen by the kernel.

    SO_REUSEADDR makes the check agree with qemu's own bind: sockets left in TIME_WAIT
    by the previous boot (qemu closes first when it exits, so the guest side of every
    ssh connection lingers for 60 s) do not count as busy, a listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if preferred:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOCALHOST, preferred))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and preferred:
                raise PermanentError(busy_port_message(preferred)) from exc
            if exc.errno == errno.EACCES:
                raise PermanentError(
                    f"ssh.localPort {preferred}: binding it needs privileges this user "
                    "does not have; set ssh.localPort to a port above 1023 (0 picks a free one)"
                ) from exc
            # Anything else (out of ports, a short-lived kernel refusal) may pass.
            raise TemporaryError(f"cannot bind {LOCALHOST}:{preferred}: {exc.strerror}",
                                 delay=5.0) from exc
        port: int = s.getsockname()[1]
    return port


def busy_port_message(port: int) -> str:
    """What holds `port` and what the user can do about it."""
    holders = port_holders(port)
    if holders:
        who = ", ".join(h.describe() for h in holders[:3])
        if len(holders) > 3:
            who += f" and {len(holders) - 3} more"
    else:
        who = "a socket this user cannot attribute to a process"
    return (
        f"ssh.localPort {port} on {LOCALHOST} is already in use by {who}; "
        "set another ssh.localPort in lima.yaml (0 picks a free port) or stop that process"
    )


def port_holders(port: int, proc: Path = Path("/proc")) -> list[PortHolder]:
    """The processes holding local TCP `port` on an address that conflicts with
    127.0.0.1, listeners first. A socket whose process cannot be read (another user's)
    is reported with `pid=None`; TIME_WAIT entries, which own no process, are skipped."""
    sockets: dict[int, tuple[int, bool]] = {}  # inode -> (uid, listening)
    for entry in _tcp_entries(proc):
        address, entry_port, state, uid, inode = entry
        if entry_port == port and state != _TIME_WAIT and inode and address in _CONFLICTING:
            listening = state == _LISTEN or sockets.get(inode, (0, False))[1]
            sockets[inode] = (uid, listening)
    if not sockets:
        return []
    owners = _socket_owners(set(sockets), proc)
    holders: list[PortHolder] = []
    for inode, (uid, listening) in sockets.items():
        pids = owners.get(inode, [])
        if not pids:
            holders.append(PortHolder(None, uid, "", listening))
        for pid in pids:
            holders.append(PortHolder(pid, uid, _command(pid, proc), listening))
    # Listeners are what blocks a bind; a stable order keeps messages reproducible.
    holders.sort(key=lambda h: (not h.listening, h.pid is None, h.pid or 0))
    unique: list[PortHolder] = []
    for h in holders:
        if h not in unique:
            unique.append(h)
    return unique


# --- /proc parsing ------------------------------------------------------------------------

_TcpEntry = tuple[str, int, str, int, int]  # (address, port, state, uid, inode)


def parse_proc_net_tcp(text: str) -> Iterator[_TcpEntry]:
    """Rows of /proc/net/tcp or /proc/net/tcp6 as (address, port, state, uid, inode)."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, uid, inode = fields[1], fields[3], fields[7], fields[9]
        addr_hex, _, port_hex = local.partition(":")
        try:
            yield (_address(addr_hex), int(port_hex, 16), state, int(uid), int(inode))
        except ValueError:
            continue


def _address(hex_text: str) -> str:
    """The kernel prints each 32-bit word of the (network-order) address as a native
    integer, so packing the words natively gives back the address bytes."""
    words = [int(hex_text[i : i + 8], 16) for i in range(0, len(hex_text), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise ValueError(f"not an address: {hex_text}")


def _tcp_entries(proc: Path) -> Iterator[_TcpEntry]:
    for table in ("tcp", "tcp6"):
        try:
            text = (proc / "net" / table).read_text()
        except OSError:
            continue
        yield from parse_proc_net_tcp(text)


def _socket_owners(inodes: set[int], proc: Path) -> dict[int, list[int]]:
    """inode -> PIDs with a descriptor on that socket (a forking server shares one)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    owners: dict[int, list[int]] = {}
    try:
        pid_dirs = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return owners
    for pid_dir in pid_dirs:
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            # Another user's process (EACCES) or one that just exited: not ours to read.
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and int(pid_dir.name) not in owners.get(inode, []):
                owners.setdefault(inode, []).append(int(pid_dir.name))
    return owners


def _command(pid: int, proc: Path) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        raw = b""
    # Whitespace collapsed: the command goes into a one-line message.
    text = " ".join(raw.decode(errors="replace").replace("\0", " ").split())
    if not text:
        # Kernel threads and zombies have no argv; their short name is all there is.
        try:
            text = (proc / str(pid) / "comm").read_text().strip()
        except OSError:
            text = ""
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 3] + "..."


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}, uid {uid}"
    except KeyError:
        return f"uid {uid}"
