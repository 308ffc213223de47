"""Picking the ssh port: TIME_WAIT is no obstacle, a listener is a permanent error that
names its process (lima.drivers.ports).

The sockets are real (loopback only): the kernel's bind rules are what is under test.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.drivers import hostagent, ports
from lima.errors import PermanentError


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def _time_wait_ports() -> set[int]:
    entries = ports.parse_proc_net_tcp(Path("/proc/net/tcp").read_text())
    return {port for _, port, state, _, _ in entries if state == "06"}


def _leave_time_wait() -> int:
    """A port with a TIME_WAIT socket on it and no listener, as a stopped qemu leaves its
    ssh port: qemu listens with SO_REUSEADDR and closes its side first when it exits."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port: int = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: it is the one left in TIME_WAIT
    srv.close()
    time.sleep(0.05)
    client.close()
    return port


def test_time_wait_port_is_picked() -> None:
    port = _leave_time_wait()
    assert port in _time_wait_ports()  # the obstacle is really there
    assert ports.pick_ssh_port(port) == port


def test_listener_is_permanent_and_named(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(PermanentError) as exc:
        ports.pick_ssh_port(port)
    msg = str(exc.value)
    assert f"ssh.localPort {port}" in msg
    assert f"PID {os.getpid()} (" in msg
    assert "set another ssh.localPort" in msg and "stop that process" in msg


def test_holder_lookup_names_this_process(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    holders = ports.port_holders(port)
    assert [h.pid for h in holders] == [os.getpid()]
    assert holders[0].listening
    assert "pytest" in holders[0].command or "python" in holders[0].command


def test_ipv6_wildcard_listener_is_found() -> None:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        s.bind(("::", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PermanentError, match=f"PID {os.getpid()} "):
            ports.pick_ssh_port(port)
    finally:
        s.close()


def test_zero_picks_a_free_port() -> None:
    port = ports.pick_ssh_port(0)
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it was free


def test_hostagent_keeps_the_old_name() -> None:
    assert hostagent.pick_ssh_port is ports.pick_ssh_port


_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 777 1
   1: 0100007F:08AE 0100007F:C350 06 00000000:00000000 03:00000a1f 00000000     0        0 0 3
   2: 0500A8C0:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 888 1
"""
_TCP6 = """\
  sl  local_address                         remote_address                        st ...
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 999 1
"""  # noqa: E501 (the kernel's line)


def test_parse_proc_net_tcp() -> None:
    rows = list(ports.parse_proc_net_tcp(_TCP))
    assert rows[0] == ("127.0.0.1", 2222, "0A", 1001, 777)
    assert rows[1][2:] == ("06", 0, 0)
    assert rows[2][0] == "192.168.0.5"
    assert list(ports.parse_proc_net_tcp(_TCP6)) == [("::", 8080, "0A", 0, 999)]


def test_unreadable_holder_is_another_users_process(tmp_path: Path) -> None:
    # A fake /proc: the listener's inode is in the table but in no process we can read.
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(_TCP)
    (tmp_path / "123" / "fd").mkdir(parents=True)
    os.symlink("socket:[555]", tmp_path / "123" / "fd" / "3")
    holders = ports.port_holders(2222, proc=tmp_path)
    # The 192.168.0.5 listener does not conflict with 127.0.0.1; TIME_WAIT owns nothing.
    assert holders == [ports.PortHolder(None, 1001, "", True)]
    assert holders[0].describe().startswith("another user's process (")
    assert "uid 1001" in holders[0].describe()


def test_holder_found_through_fd_links(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(_TCP)
    (tmp_path / "321" / "fd").mkdir(parents=True)
    os.symlink("socket:[777]", tmp_path / "321" / "fd" / "5")
    (tmp_path / "321" / "cmdline").write_bytes(b"\0".join([b"nc", b"-l", b"-p", b"2222"]))
    (holder,) = ports.port_holders(2222, proc=tmp_path)
    assert holder.describe() == "PID 321 (nc -l -p 2222)"
