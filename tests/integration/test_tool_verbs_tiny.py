"""`limactl show-ssh` and `limactl tunnel` against a real tiny guest.

show-ssh: the printed `ssh` command line (and the `config` block, through `ssh -F`) logs
in. tunnel: a SOCKS5 client speaking to the proxy on 127.0.0.1 reaches an HTTP server that
listens on the guest's loopback only; the tunnel's ssh process is then ended by its PID.
Once more with the instance's ssh master running: the forward then lives in the master.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl

pytestmark = pytest.mark.integration


def _socks5_get(proxy_port: int, host: str, port: int, path: str) -> str:
    """A minimal SOCKS5 client (RFC 1928, no auth, domain name) doing one HTTP GET."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=20) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        name = host.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
        reply = sock.recv(10)
        assert reply[:2] == b"\x05\x00", reply
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def _listener_pids(port: int) -> list[int]:
    """PIDs of our processes holding a socket that listens on 127.0.0.1:port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and local == f"0100007F:{port:04X}":
            inodes.add(f"socket:[{inode}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if links & inodes:
            pids.append(int(proc.name))
    return pids


def test_show_ssh_and_tunnel_on_tiny(limactl: Limactl, tmp_path: Path) -> None:
    yaml = tmp_path / "tv.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", yaml)
    limactl("apply", str(yaml), timeout=600)

    # show-ssh: the printed command runs as printed (by a shell), with a command appended.
    shown = limactl("show-ssh", "tv")
    assert "is deprecated" in shown.stderr
    cmd = shown.stdout.strip()
    assert cmd.startswith("ssh ") and cmd.endswith(" lima-tv")
    # shlex does the shell's word splitting and quote removal.
    words = shlex.split(cmd)
    assert words[0] == "ssh"
    ran = subprocess.run(["ssh", *words[1:], "echo", "hello-from-guest"], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "hello-from-guest"
    config = tmp_path / "ssh_config"
    config.write_text(limactl("show-ssh", "--format=config", "tv").stdout)
    ran = subprocess.run(["ssh", "-F", str(config), "lima-tv", "id", "-un"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    options = limactl("show-ssh", "-f", "options", "tv").stdout.splitlines()
    assert options[-1].startswith("Port=") and int(options[-1][5:]) > 0
    assert options[-2] == "Hostname=127.0.0.1"
    # A web server bound to the guest's loopback only: the host cannot reach it directly.
    limactl("shell", "tv", "sh", "-c",
            "mkdir -p /tmp/www && echo tunnel-ok > /tmp/www/index.html && "
            "busybox httpd -p 127.0.0.1:8080 -h /tmp/www")
    # End the ssh master the commands above left, so the tunnel makes its own connection.
    subprocess.run(["ssh", "-F", str(config), "-O", "exit", "lima-tv"], capture_output=True,
                   timeout=30)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = limactl("tunnel", "--socks-port", str(port), "tv", timeout=120)
    pids = _listener_pids(port)
    try:
        assert f"Set `ALL_PROXY=socks5h://127.0.0.1:{port}`, etc." in started.stdout
        assert "<http://lima-tv.internal>" in started.stdout
        assert "is experimental" in started.stderr
        assert pids, "nothing listens on the SOCKS port"
        for pid in pids:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert Path(argv[0].decode()).name == "ssh", argv
        response = _socks5_get(port, "127.0.0.1", 8080, "/index.html")
        assert response.startswith("HTTP/1.") and "tunnel-ok" in response, response
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _listener_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _listener_pids(port)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0

    # With the instance's ssh master up (ControlMaster=auto, as Lima's options say), the
    # forward is handed to the master and the tunnel's own ssh exits at once.
    limactl("shell", "tv", "true")
    started = limactl("tunnel", "--socks-port", str(port), "tv", timeout=120)
    pids = _listener_pids(port)
    try:
        assert len(pids) == 1
        assert "[mux]" in Path(f"/proc/{pids[0]}/cmdline").read_text()
        assert "tunnel-ok" in _socks5_get(port, "127.0.0.1", 8080, "/index.html")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)

    # A stopped instance has no tunnel: Lima's message.
    limactl("stop", "tv", timeout=120)
    refused = limactl("tunnel", "tv", check=False)
    assert refused.returncode == 1
    assert ("instance `tv` is stopped, run `limactl start tv` to start the instance"
            in refused.stderr)
