"""`video.display: vnc` on real QEMU with the tiny guest: QEMU's VNC server answers with an
RFB banner on 127.0.0.1 only, takes the password the host agent wrote to vncpassword (and
refuses another), skips a display that is taken (`to=`), and vncdisplay/vncpassword go
away when the instance stops, as in Lima."""

from __future__ import annotations

import socket
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

BASE_DISPLAY = 60  # 5960..5969: away from a desktop's 5900 and the other tests' ports


def vnc_auth(port: int, password: str) -> tuple[bytes, int]:
    """RFB 3.8 handshake with VNC authentication: (banner, SecurityResult; 0 is OK)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DES lives in cryptography's "decrepit" corner
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        banner = sock.recv(12)
        sock.sendall(banner)
        count = sock.recv(1)[0]
        types = sock.recv(count)
        assert 2 in types, f"VNC authentication not offered: {types!r}"
        sock.sendall(b"\x02")
        challenge = sock.recv(16)
        # VNC's DES key: the password's bytes, each bit-reversed (single DES = 3DES, k1=k2=k3).
        key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
        enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
        sock.sendall(enc.update(challenge) + enc.finalize())
        (result,) = struct.unpack(">I", sock.recv(4))
    return banner, result


def tcp_listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.append(addr)
    return found


def free_display() -> int:
    for n in range(BASE_DISPLAY, BASE_DISPLAY + 8):
        if not tcp_listeners(5900 + n) and not tcp_listeners(5901 + n):
            return n
    pytest.skip("no free pair of VNC ports in 5960..5969")


@pytest.fixture
def held() -> Iterator[tuple[socket.socket, int]]:
    """A loopback listener on display N's port, so that QEMU must take N+1 (to=N+3)."""
    number = free_display()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 5900 + number))
    sock.listen(1)
    try:
        yield sock, number
    finally:
        sock.close()


def test_vnc_display_on_loopback_with_password(limactl: Limactl, tmp_path: Path,
                                              held: tuple[socket.socket, int]) -> None:
    _, number = held
    spec = tmp_path / "v.yaml"
    spec.write_text((REPO / "examples" / "tiny.yaml").read_text()
                    + f"video:\n  display: vnc\n  vnc:\n    display: 127.0.0.1:{number},"
                      f"to={number + 3}\n")
    out = limactl("apply", str(spec), timeout=300)
    taken = number + 1
    inst = limactl.home / "v"
    assert f"VNC server running at 127.0.0.1:{taken} <vnc://127.0.0.1:{5900 + taken}>" \
        in out.stderr
    assert f"VNC Password: `{inst / 'vncpassword'}`" in out.stderr

    display = inst / "vncdisplay"
    password_file = inst / "vncpassword"
    assert display.read_text() == f"127.0.0.1:{taken}"
    for f in (display, password_file):
        assert f.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text()
    assert len(password) == 8 and password.isalnum()

    port = 5900 + taken
    # Only IPv4 loopback listens (0100007F is 127.0.0.1 in /proc's byte order).
    assert tcp_listeners(port) == ["0100007F"]
    banner, ok = vnc_auth(port, password)
    assert banner == b"RFB 003.008\n"
    assert ok == 0
    assert vnc_auth(port, "wrong123" if password != "wrong123" else "wrong124")[1] != 0

    limactl("stop", "v", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    assert not display.exists() and not password_file.exists()
    assert tcp_listeners(port) == []


def test_vnc_files_of_a_killed_agent_go_at_stop(limactl: Limactl, tmp_path: Path) -> None:
    """A host agent killed with its qemu running leaves the files; `limactl stop` (which
    then stops qemu itself) removes them."""
    import os
    import signal

    from lima.drivers import procs

    number = free_display()
    spec = tmp_path / "k.yaml"
    spec.write_text((REPO / "examples" / "tiny.yaml").read_text()
                    + f"video:\n  display: vnc\n  vnc:\n    display: 127.0.0.1:{number},"
                      f"to={number + 3}\n")
    limactl("apply", str(spec), timeout=300)
    inst = limactl.home / "k"
    agent = procs.hostagent_pid(inst)
    assert agent is not None and (inst / "vncpassword").exists()
    os.kill(agent, signal.SIGKILL)
    assert procs.wait_exit(agent, 10)
    assert (inst / "vncdisplay").exists()  # the killed agent could not remove it
    limactl("stop", "k", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    assert not (inst / "vncdisplay").exists() and not (inst / "vncpassword").exists()
