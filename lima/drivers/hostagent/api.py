"""`GET /v1/info` over ha.sock: HTTP on the instance's unix socket.

The daemon serves its own view of the boot (`serve_info`); the driver, `limactl list` and
`limactl shell` ask it (`hostagent_info`). One GET does not pay for an HTTP library.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lima import paths
from lima.errors import LimaError

log = logging.getLogger(__name__)

# --- /v1/info over ha.sock ------------------------------------------------------------------

class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    info: Callable[[], dict[str, Any]]


class _InfoHandler(http.server.BaseHTTPRequestHandler):
    server: UnixHTTPServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/v1/info":
            self.send_error(404)
            return
        body = json.dumps(self.server.info()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "ha.sock"  # unix peers have no address; the default indexes an empty string

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: " + format, *args)


def serve_info(sock_path: Path, info: Callable[[], dict[str, Any]]) -> UnixHTTPServer:
    """Serve `GET /v1/info` on `sock_path` from a background thread."""
    if len(str(sock_path).encode()) >= paths.UNIX_PATH_MAX:
        raise LimaError(f"socket path too long for a unix socket: {sock_path}")
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    server = UnixHTTPServer(str(sock_path), _InfoHandler)
    server.info = info
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ha-api",
                     daemon=True).start()
    return server


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def hostagent_info(inst_dir: Path, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """`GET /v1/info` on ha.sock; None when no host agent answers."""
    sock = inst_dir / paths.HA_SOCK
    if not sock.exists():
        return None
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", "/v1/info")
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        data = json.loads(resp.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return data if isinstance(data, dict) else None

