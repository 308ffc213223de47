"""Figures for `limactl copy` and hostResolver, on the tiny guest.

1. DNS server alone: round trips of length-prefixed queries over dns.sock (as QEMU's
   guestfwd chardev sends them), median and p95 in microseconds, 2000 queries.
2. In the guest (examples/tiny.yaml, restrictNetwork: true): `ping -c1 -W1 NAME` resolving
   host.lima.internal's alias through the host agent, 20 runs inside one `limactl shell`
   (busybox's `time`), mean in ms.
3. `limactl copy` of a 16 MiB file host -> guest and back (scp: tiny has no rsync), wall
   seconds and MiB/s, 3 runs each, plus a 200-file directory with -r.

Usage: .venv/bin/python benchmarks/copy_dns.py [--no-guest]
A private LIMA_HOME under /tmp; the guest is stopped and the home deleted at the end
(its qemu and host agent are killed by PID if the stop fails).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dnslib import DNSRecord

from lima.drivers.hostagent.dns import DNSServer, HostResolver, ResolverConfig

REPO = Path(__file__).resolve().parents[1]


def dns_server_figures(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory(prefix="bdns-", dir="/tmp") as tmp:
        path = Path(tmp) / "dns.sock"
        server = DNSServer(HostResolver(ResolverConfig("vm", hosts={"a.example": "10.0.0.1"},
                                                       forward=False)), path)
        server.start()
        q = DNSRecord.question("a.example").pack()
        frame = struct.pack(">H", len(q)) + q
        times = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                for _ in range(n):
                    t = time.perf_counter()
                    s.sendall(frame)
                    size = struct.unpack(">H", s.recv(2, socket.MSG_WAITALL))[0]
                    s.recv(size, socket.MSG_WAITALL)
                    times.append((time.perf_counter() - t) * 1e6)
        finally:
            server.stop()
    times.sort()
    print(f"dns.sock round trip: median {statistics.median(times):.0f} us, "
          f"p95 {times[int(0.95 * n)]:.0f} us ({n} queries)")


def limactl(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIMA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, check=check, timeout=900)


def guest_figures() -> None:
    home = Path(tempfile.mkdtemp(prefix="bcp-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="bcpw-", dir="/tmp"))
    try:
        f = work / "t.yaml"
        shutil.copy(REPO / "examples" / "tiny.yaml", f)
        f.write_text(f.read_text() + "hostResolver:\n  hosts:\n    a.example: host.lima.internal\n")
        limactl(home, "apply", str(f))
        script = "time sh -c 'for i in $(seq 20); do ping -c1 -W1 a.example >/dev/null; done'"
        res = limactl(home, "shell", "t", "sh", "-c", script)
        m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", res.stderr + res.stdout)
        if m:
            per = (int(m.group(1)) * 60 + float(m.group(2))) / 20
            print(f"guest resolves a.example (ping -c1, resolution + one ICMP round trip): "
                  f"{per * 1000:.1f} ms each, mean of 20")
        else:
            print(f"guest resolution: no timing in {res.stderr!r}")

        blob = work / "blob"
        blob.write_bytes(os.urandom(16 << 20))
        for direction in ("host->guest", "guest->host"):
            walls = []
            for _ in range(3):
                src, dst = ((str(blob), "t:/tmp/blob") if direction == "host->guest"
                            else ("t:/tmp/blob", str(work / "back")))
                t = time.monotonic()
                limactl(home, "copy", src, dst)
                walls.append(time.monotonic() - t)
            med = statistics.median(walls)
            print(f"copy 16 MiB {direction} (scp): median {med:.2f} s, {16 / med:.1f} MiB/s")
        tree = work / "tree"
        tree.mkdir()
        for i in range(200):
            (tree / f"f{i}").write_text("x" * 1000)
        t = time.monotonic()
        limactl(home, "copy", "-r", str(tree), "t:/tmp/tree")
        print(f"copy -r 200 files of 1 kB host->guest (scp): {time.monotonic() - t:.2f} s")
        limactl(home, "stop", "t")
    finally:
        for name in ("ha.pid", "qemu.pid"):
            try:
                pid = int((home / "t" / name).read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-guest", action="store_true", help="only the DNS server figures")
    args = parser.parse_args()
    dns_server_figures()
    if not args.no_guest:
        guest_figures()


if __name__ == "__main__":
    main()
