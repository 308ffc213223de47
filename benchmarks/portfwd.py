"""Port forwarding figures: guest listen -> host port reachable (target <= 1 s), forwarded
throughput against a direct QEMU hostfwd to the same guest port (target >= 0.8x), and what
the guest agent costs in the guest (RSS, CPU).

In a private LIMA_HOME under /tmp, an instance is applied (examples/tiny.yaml by default;
`--yaml examples/default.yaml` for the Debian guest); then:
  latency: `limactl shell` starts busybox/python httpd on 127.0.0.1:PORT (it binds before
    the shell returns); the time from the return until an HTTP GET through the host's
    127.0.0.1:PORT answers, then the time from killing it until the host port refuses;
  throughput: a FILE_MB file served on 0.0.0.0:PORT, fetched through its forward (a
    wildcard listener: QEMU hostfwd added by the host agent) and through a hostfwd the
    benchmark adds itself with QMP (the direct path), plus the same file served on guest
    127.0.0.1 (forwarded over ssh), interleaved, medians;
  agent: VmRSS of the agent process(es) and their CPU time over 10 s of idle polling.
Usage: PYTHONPATH=. .venv/bin/python benchmarks/portfwd.py [--runs 3] [--yaml FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lima.drivers.qmp import QMPClient  # noqa: E402

NAME = "pf"


def limactl(home: Path, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def guest(home: Path, script: str) -> str:
    return limactl(home, "shell", NAME, "sh", "-c", script, timeout=120)


def http_get(port: int, timeout: float = 2.0, path: str = "/") -> int:
    """Bytes of the answer to GET `path` on 127.0.0.1:port (OSError when it fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(60)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        total = 0
        head = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            if not head:
                head = chunk[:12]
            total += len(chunk)
    if not head.startswith(b"HTTP/1."):
        raise OSError("no HTTP answer")
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def serve_cmd(python: bool, ip: str, port: int) -> str:
    if python:
        return (f"cd /tmp/www && setsid python3 -m http.server -b {ip} {port} "
                f">/dev/null 2>&1 </dev/null & i=0; while ! grep -qi ':{port:04X} ' "
                f"/proc/net/tcp /proc/net/tcp6 && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); "
                f"done; echo $!")
    return f"httpd -p {ip}:{port} -h /tmp/www && pidof httpd | tr ' ' '\\n' | head -1"


def latency(home: Path, python: bool, runs: int) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    for _ in range(runs):
        port = free_port()
        pid = guest(home, serve_cmd(python, "127.0.0.1", port)).split()[-1]
        t0 = time.monotonic()
        while True:
            try:
                http_get(port, timeout=1.0)
                break
            except OSError:
                if time.monotonic() - t0 > 30:
                    raise SystemExit(f"port {port} never became reachable") from None
                time.sleep(0.02)
        ups.append(time.monotonic() - t0)
        guest(home, f"kill {pid}")
        t0 = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            except OSError:
                break
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"port {port} was never released")
            time.sleep(0.02)
        downs.append(time.monotonic() - t0)
    return ups, downs


def throughput(home: Path, python: bool, runs: int,
               file_mb: int) -> tuple[float, float, float]:
    port = free_port()
    guest(home, f"dd if=/dev/zero of=/tmp/www/big bs=1M count={file_mb} 2>/dev/null")
    guest(home, serve_cmd(python, "0.0.0.0", port))
    loopback = free_port()  # a guest-loopback listener: only ssh reaches it
    guest(home, serve_cmd(python, "127.0.0.1", loopback))
    direct = free_port()
    with QMPClient(home / NAME / "qmp.sock") as qmp:
        qmp.execute("human-monitor-command",
                    {"command-line": f"hostfwd_add net0 tcp:127.0.0.1:{direct}-:{port}"})
    deadline = time.monotonic() + 30
    while True:
        try:
            http_get(port, timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the forward never came up") from None
            time.sleep(0.1)
    got: dict[str, list[float]] = {"fwd": [], "raw": [], "ssh": []}
    where = {"fwd": port, "raw": direct, "ssh": loopback}
    for run in range(runs):
        for kind in (("fwd", "raw", "ssh") if run % 2 == 0 else ("ssh", "raw", "fwd")):
            t0 = time.monotonic()
            size = http_get(where[kind], timeout=30, path="/big")
            mbps = size / (time.monotonic() - t0) / 1e6
            got[kind].append(mbps)
            print(f"  {kind}: {mbps:.1f} MB/s")
    return tuple(statistics.median(got[k]) for k in ("fwd", "raw", "ssh"))  # type: ignore[return-value]


def agent_cost(home: Path) -> str:
    script = (
        "for d in /proc/[0-9]*; do p=${d#/proc/}; "
        # the brackets keep this script's own command line from matching
        "grep -q 'local/bin/lima-guestagen[t]' $d/cmdline 2>/dev/null || continue; "
        "echo $p $(grep VmRSS /proc/$p/status | tr -s ' ' | cut -d' ' -f2) "
        "$(cut -d' ' -f14-17 /proc/$p/stat); done; cat /proc/uptime"
    )
    first = guest(home, script).split("\n")
    time.sleep(10)
    second = guest(home, script).split("\n")

    def ticks(lines: list[str]) -> tuple[dict[str, tuple[int, int]], float]:
        procs = {}
        for line in lines[:-2] if lines[-1] == "" else lines[:-1]:
            f = line.split()
            if len(f) >= 6:
                procs[f[0]] = (int(f[1]), sum(int(x) for x in f[2:6]))
        uptime = float([x for x in lines if x.strip()][-1].split()[0])
        return procs, uptime

    p1, u1 = ticks(first)
    p2, u2 = ticks(second)
    rss = sum(v[0] for v in p2.values())
    cpu = sum(v[1] - p1.get(k, (0, v[1]))[1] for k, v in p2.items()) / 100.0
    return (f"guest agent: VmRSS {rss} KiB ({len(p2)} process(es)), CPU "
            f"{cpu:.2f} s over {u2 - u1:.1f} s ({100 * cpu / max(u2 - u1, 0.1):.1f}% of one "
            "vCPU, children included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--yaml", default=str(REPO / "examples" / "tiny.yaml"))
    parser.add_argument("--file-mb", type=int, default=32)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lpf-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="lpf-yaml-"))
    spec = work / f"{NAME}.yaml"
    shutil.copy(args.yaml, spec)
    try:
        t0 = time.monotonic()
        limactl(home, "apply", str(spec))
        print(f"apply: {time.monotonic() - t0:.1f} s ({args.yaml})")
        python = "python3" in guest(home, "command -v python3 || true")
        guest(home, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html")
        ups, downs = latency(home, python, args.runs)
        print(f"listen -> reachable: median {statistics.median(ups):.2f} s, max "
              f"{max(ups):.2f} s (target <= 1 s); runs {[round(u, 2) for u in ups]}")
        print(f"exit -> refused: median {statistics.median(downs):.2f} s, max "
              f"{max(downs):.2f} s; runs {[round(d, 2) for d in downs]}")
        fwd, raw, ssh = throughput(home, python, args.runs, args.file_mb)
        print(f"throughput ({args.file_mb} MiB): forwarded {fwd:.1f} MB/s, direct hostfwd "
              f"{raw:.1f} MB/s, ratio {fwd / raw:.2f}x (target >= 0.8x); a guest-loopback "
              f"listener (over ssh) {ssh:.1f} MB/s, {ssh / raw:.2f}x")
        print(agent_cost(home))
    finally:
        subprocess.run([sys.executable, "-m", "lima.cli", "delete", "-f", NAME],
                       env={**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)},
                       cwd=REPO, capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
