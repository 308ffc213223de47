"""`GET /v1/info` over ha.sock: HTTP on the instance's unix socket.

The daemon serves its own view of the boot (`serve_info`); the driver, `limactl list` and
`limactl shell` ask it (`hostagent_info`). One GET does not pay for an HTTP library.

`GET /v1/info?after=V&wait=S` is a long poll: the answer comes once the view's `version`
is not V any more, or after S seconds (at most MAX_WAIT). `limactl start` waits on it instead of
asking 20 times a second: under TCG each answer's CPU on the host is CPU the booting
guest's vCPUs do not get. An agent that predates it ignores the query and answers at once,
without `version`.
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
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lima import paths
from lima.errors import LimaError

log = logging.getLogger(__name__)

MAX_WAIT = 10.0  # the longest a long poll is held, whatever the client asks

# (after, wait) -> returns once the view's version is not `after` or `wait` has passed.
WaitChange = Callable[[int, float], None]

# --- /v1/info over ha.sock ------------------------------------------------------------------

class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    info: Callable[[], dict[str, Any]]
    wait_change: WaitChange | None = None


class _InfoHandler(http.server.BaseHTTPRequestHandler):
    server: UnixHTTPServer

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path != "/v1/info":
            self.send_error(404)
            return
        after, wait = _long_poll(query)
        if after is not None and wait > 0 and self.server.wait_change is not None:
            self.server.wait_change(after, min(wait, MAX_WAIT))
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


def _long_poll(query: str) -> tuple[int | None, float]:
    """`after` and `wait` from the query; (None, 0) when absent or not numbers."""
    fields = urllib.parse.parse_qs(query)
    try:
        after = int(fields["after"][0])
        wait = float(fields.get("wait", ["0"])[0])
    except (KeyError, ValueError):
        return None, 0.0
    return after, wait if wait == wait else 0.0  # NaN waits not at all


def serve_info(
    sock_path: Path, info: Callable[[], dict[str, Any]], wait_change: WaitChange | None = None
) -> UnixHTTPServer:
    """Serve `GET /v1/info` on `sock_path` from a background thread; `wait_change` holds a
    long poll (`?after=V&wait=S`) until the view changes."""
    if len(str(sock_path).encode()) >= paths.UNIX_PATH_MAX:
        raise LimaError(f"socket path too long for a unix socket: {sock_path}")
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    server = UnixHTTPServer(str(sock_path), _InfoHandler)
    server.info = info
    server.wait_change = wait_change
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


def hostagent_info(
    inst_dir: Path, *, timeout: float = 2.0, after: int | None = None, wait: float = 0.0
) -> dict[str, Any] | None:
    """`GET /v1/info` on ha.sock; None when no host agent answers. With `after` (a
    `version` it answered before) and `wait`, the agent answers once its view changed or
    `wait` seconds passed; `timeout` then counts from the end of that wait."""
    sock = inst_dir / paths.HA_SOCK
    if not sock.exists():
        return None
    url = "/v1/info"
    if after is not None and wait > 0:
        wait = min(wait, MAX_WAIT)
        url += f"?after={after}&wait={wait:.3f}"
        timeout += wait
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        data = json.loads(resp.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return data if isinstance(data, dict) else None

