"""Helpers for the image tests of this tier: a spec naming images, and a 127.0.0.1 HTTP
server that counts the GETs of the files it serves (nothing leaves the machine)."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from lima import paths
from lima.schemas.spec import Image, InstanceSpec, SSHConfig, User

MiB = 1 << 20
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"


def spec(*locations: str, digest: str | None = None) -> InstanceSpec:
    return InstanceSpec(
        name="t", vm_type="qemu", os="Linux", arch="x86_64",
        images=tuple(Image(location=loc, arch="x86_64", digest=digest) for loc in locations),
        cpus=1, memory=512 * MiB, disk=64 * MiB, mounts=(), mount_type="reverse-sshfs",
        ssh=SSHConfig(), user=User("u", 1000, "", "/home/u.linux", "/bin/bash"))


def inst(name: str = "vm") -> Path:
    return paths.lima_home() / name


class FileServer:
    """`with FileServer() as srv: url = srv.add("/x", data)`; `srv.gets["/x"]` counts."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                server.gets[self.path] += 1
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                data = server.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.send_header("Last-Modified", LAST_MODIFIED)
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
