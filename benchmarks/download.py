"""Download cache throughput against curl, and the cost of a cache hit.

Serves a generated file (200 MiB by default) on 127.0.0.1 with sendfile, then prints:
  - curl -o /dev/null and curl -o FILE on it (MB/s, best of N),
  - lima.drivers.images.download.download() into an empty cache (MB/s, best of N;
    it writes the file, hashes sha256+sha512 and fsyncs),
  - the ratios,
  - a cache hit: download() alone (it re-hashes the cached data against its recorded
    digest), and prepare_disks() of a new instance (a copy of the data, the image check
    and qemu-img create; benchmarks/image_cache.py breaks the build-cache case down).

Usage: .venv/bin/python benchmarks/download.py [--size-mib 200] [--runs 3]
Nothing leaves this machine; everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MB = 1_000_000


def serve(path: Path) -> tuple[ThreadingHTTPServer, str]:
    size = path.stat().st_size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            self._headers()
            with path.open("rb") as f:
                self.connection.sendfile(f)

        def _headers(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/image.raw"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lima-bench-dl-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    os.environ["LIMA_HOME"] = str(work / "home")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(var, None)
    # Imported after the environment points into `work`.
    from lima import paths
    from lima.drivers import runner
    from lima.drivers.images import download, prepare_disks
    from lima.schemas.spec import Image, InstanceSpec, SSHConfig, User

    try:
        src = work / "image.raw"
        block = os.urandom(1 << 20)  # incompressible, and cheap to generate
        with src.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        size = src.stat().st_size
        digest = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
        httpd, url = serve(src)

        def curl(target: str) -> float:
            out = runner.run(["curl", "-sS", "--noproxy", "*", "-o", target, "-w",
                              "%{speed_download}", url]).stdout
            return float(out) / MB

        curl_null = max(curl("/dev/null") for _ in range(args.runs))
        curl_file_rates = []
        for _ in range(args.runs):
            curl_file_rates.append(curl(str(work / "curl.out")))
            (work / "curl.out").unlink()
        curl_file = max(curl_file_rates)

        ours_rates = []
        for _ in range(args.runs):
            shutil.rmtree(paths.download_dir(), ignore_errors=True)
            t0 = time.perf_counter()
            got = download.download(url, digest=digest)
            ours_rates.append(size / (time.perf_counter() - t0) / MB)
            assert got.status == "downloaded"
        ours = max(ours_rates)

        t0 = time.perf_counter()
        hit = download.download(url, digest=digest)
        hit_s = time.perf_counter() - t0
        assert hit.status == "used-cache"

        spec = InstanceSpec(
            name="bench", vm_type="qemu", os="Linux", arch="x86_64",
            images=(Image(location=url, arch="x86_64", digest=digest),), cpus=1,
            memory=1 << 30, disk=10 << 30, mounts=(), mount_type="reverse-sshfs",
            ssh=SSHConfig(), user=User("u", 1000, "", "/home/u.linux", "/bin/bash"))
        t0 = time.perf_counter()
        prepare_disks(spec, paths.instance_dir("bench"))
        prepare_s = time.perf_counter() - t0
        httpd.shutdown()
        httpd.server_close()

        print(f"file: {size / MB:.0f} MB ({args.size_mib} MiB) on 127.0.0.1, best of {args.runs}")
        print(f"curl -o /dev/null          : {curl_null:8.0f} MB/s")
        print(f"curl -o FILE               : {curl_file:8.0f} MB/s")
        print(f"limapy download (cold)     : {ours:8.0f} MB/s  "
              f"(runs: {', '.join(f'{r:.0f}' for r in ours_rates)})")
        print(f"ratio limapy / curl null   : {ours / curl_null:8.2f}")
        print(f"ratio limapy / curl file   : {ours / curl_file:8.2f}")
        print(f"cache hit, download()      : {hit_s * 1000:8.1f} ms")
        print(f"cache hit, prepare_disks() : {prepare_s * 1000:8.1f} ms "
              "(re-hash + copy + qemu-img info + qemu-img create)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
