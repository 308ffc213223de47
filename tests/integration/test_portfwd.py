"""Port forwarding on real guests through the real CLI: the guest agent reports listeners
over the virtio port and the host agent forwards them by lima.yaml's portForwards.

tiny (busybox, the sh agent): a busybox `nc -l` listener is forwarded and released when it
exits, a static forward exists before the guest listens, a busy host port is a `failed`
event naming its holder, and a live change of portForwards (`limactl apply`) moves a static
forward without a restart. The Debian guest's forwards (python3 -m http.server, a static
forward, a guest unix socket) are checked on the shared Debian instance
(test_debian_shared.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import REPO, Limactl, qemu_pids_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def port_events(home: Path, name: str) -> list[dict[str, Any]]:
    out = []
    try:
        lines = (home / name / "ha.stdout.log").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        pf = event.get("status", {}).get("portForward")
        if isinstance(pf, dict):
            out.append(pf)
    return out


def until(cond: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def talk(port: int, send: bytes = b"", timeout: float = 3.0) -> bytes:
    """Connect to 127.0.0.1:port, send, read until EOF ("" on any failure)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if send:
                s.sendall(send)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk
    except OSError:
        return b""


def http_ok(port: int) -> bool:
    return talk(port, b"GET / HTTP/1.0\r\n\r\n", timeout=1.0).startswith(b"HTTP/1.0 200")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return True
    return False


def test_tiny_nc_static_and_busy_port(limactl: Limactl, tmp_path: Path) -> None:
    nc_port, static_guest, static_host = free_port(), free_port(), free_port()
    busy_guest = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy_host = holder.getsockname()[1]
    f = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    f.write_text(f.read_text() + (
        "portForwards:\n"
        f"- guestPort: {static_guest}\n  hostPort: {static_host}\n  static: true\n"
        f"- guestPort: {busy_guest}\n  hostPort: {busy_host}\n"
    ))
    try:
        limactl("apply", str(f), timeout=300)
        home = limactl.home

        # static: forwarded from the start, before anything listens in the guest
        assert any(e["type"] == "forwarding" and e["hostAddr"] == f"127.0.0.1:{static_host}"
                   for e in port_events(home, "t"))
        assert not refused(static_host)
        limactl("shell", "t", "sh", "-c",
                f"setsid nc -ll -p {static_guest} -e echo static </dev/null >/dev/null 2>&1 &")
        assert until(lambda: talk(static_host) == b"static\n", "the static forward", 20)

        # busybox nc: forwarded while it listens, released when it exits
        limactl("shell", "t", "sh", "-c",
                f"setsid nc -l -p {nc_port} -e echo from-tiny </dev/null >/dev/null 2>&1 &")
        assert until(lambda: talk(nc_port) == b"from-tiny\n", "the nc listener", 20)
        # that one connection ended nc: the forward goes away
        assert until(lambda: refused(nc_port), "the port to be released", 20)
        events = port_events(home, "t")
        assert {"type": "forwarding", "protocol": "tcp", "guestAddr": f"[::]:{nc_port}",
                "hostAddr": f"127.0.0.1:{nc_port}"} in events
        assert any(e["type"] == "stopping" and e["guestAddr"] == f"[::]:{nc_port}"
                   for e in events)

        # a host port held by someone else: a failed event that names the holder
        limactl("shell", "t", "sh", "-c",
                f"setsid nc -ll -p {busy_guest} -e echo x </dev/null >/dev/null 2>&1 &")
        failed = until(lambda: [e for e in port_events(home, "t") if e["type"] == "failed"],
                       "the failed event", 20)
        assert failed[0]["hostAddr"] == f"127.0.0.1:{busy_host}"
        assert f"PID {os.getpid()}" in failed[0]["error"]
        assert json.loads(limactl("list", "--format", "json", "t").stdout)["status"] == \
            "Running"

        # a live change: the static forward moves to another host port, no restart
        qemu = qemu_pids_for(home)
        moved = free_port()
        f.write_text(f.read_text().replace(f"hostPort: {static_host}\n",
                                           f"hostPort: {moved}\n"))
        out = limactl("apply", str(f), timeout=120)
        assert "changes applied" in out.stdout
        assert until(lambda: talk(moved) == b"static\n", "the moved static forward", 20)
        assert until(lambda: refused(static_host), "the old static port to close", 20)
        assert qemu_pids_for(home) == qemu
    finally:
        holder.close()
    limactl("stop", "t", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    assert refused(moved)
