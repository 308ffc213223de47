"""The /proc tables the controller's idle check reads: connections accepted on a unix
socket (ssh.sock's ControlMaster clients) and TCP connections on given local ports (QEMU's
hostfwds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.controller.idle import unix_peers
from lima.drivers.hostagent.slirpfwd import established_on

pytestmark = pytest.mark.unit


def test_unix_peers_counts_the_connections_of_one_socket(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    sock = tmp_path / "inst" / "ssh.sock"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"0000: 00000002 00000000 00010000 0001 01 11 {sock}\n"  # the listener
        f"0000: 00000003 00000000 00000000 0001 03 12 {sock}\n"  # two sessions
        f"0000: 00000003 00000000 00000000 0001 03 13 {sock}\n"
        f"0000: 00000003 00000000 00000000 0001 03 14 {sock}x\n"  # another socket
        "0000: 00000003 00000000 00000000 0001 03 15\n")  # a client's end: no path
    assert unix_peers(sock, str(table)) == 2
    assert unix_peers(tmp_path / "none", str(table)) == 0
    assert unix_peers(sock, str(tmp_path / "missing")) == 0


def test_established_on_counts_local_ports_only(tmp_path: Path) -> None:
    tcp = tmp_path / "tcp"
    tcp.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"  # the listener on 8080
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000\n"  # accepted on 8080
        "   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000\n"  # the client's end
        "   3: 0100007F:1F90 0100007F:C351 08 00000000:00000000\n"  # closing
        "   4: 0100007F:1F91 0100007F:C352 01 00000000:00000000\n")  # another port
    tcp6 = tmp_path / "tcp6"
    tcp6.write_text(
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C353 01\n")
    tables = (str(tcp), str(tcp6), str(tmp_path / "missing"))
    assert established_on({8080}, tables) == 2
    assert established_on({8080, 8081}, tables) == 3
    assert established_on(set(), tables) == 0
