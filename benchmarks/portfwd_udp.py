"""UDP forwarding figures: guest UDP listen -> answered on the host port, and the round-trip
time of one datagram through the forward (the ssh datagram relay of
lima.drivers.hostagent.udprelay); plus the reverse socket forward's first answer.

`--local`: no guest. The relay's two ends run on this host (the guest end as a local
python3 process behind a pipe instead of an ssh exec channel), so the figure is the
relay's own cost: host socket -> framing -> relay process -> echo server and back, next
to a direct round trip to the same echo server.

Default: in a private LIMA_HOME under /tmp, the Debian guest (template:debian-12-local,
restrictNetwork: true, so every UDP forward uses the relay) is applied with a reverse
forward of a host unix socket; then
  listen latency: `limactl shell` starts a python3 UDP echo server on guest 127.0.0.1:PORT
    (bound before the shell returns); the time from the return until a datagram sent to
    host 127.0.0.1:PORT (resent every 50 ms) is answered;
  rtt: DATAGRAMS sequential 64-byte round trips through that forward, median and p90;
  reverse: a host unix socket echo server, reached from the guest through the reverse
    forward's guest socket (python3 in the guest), checked to answer.
Run it under `flock /tmp/limapy-debian.lock` (one Debian boot at a time on this machine).
Usage: PYTHONPATH=. .venv/bin/python benchmarks/portfwd_udp.py [--local] [--runs 3]
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lima.drivers.hostagent.tunnel import GuestEnd  # noqa: E402
from lima.drivers.hostagent.udprelay import UDPRelay  # noqa: E402
from lima.drivers.portrules import HostTarget  # noqa: E402

NAME = "pfu"
DATAGRAMS = 200

DEBIAN_YAML = """\
base: template:debian-12-local
cpus: 2
memory: "1GiB"
mounts: []
vmOpts:
  qemu:
    restrictNetwork: true
portForwards:
- guestSocket: /tmp/pfu-rev.sock
  hostSocket: {host_sock}
  reverse: true
"""

GUEST_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.bind(('127.0.0.1', {port}))\n"
              "while True:\n d, a = s.recvfrom(65535); s.sendto(d, a)")

GUEST_REVERSE_CLIENT = ("import socket; s = socket.socket(socket.AF_UNIX); "
                        "s.connect('/tmp/pfu-rev.sock'); s.sendall(b'hi'); "
                        "print(s.recv(100).decode())")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def answered_after(port: int, deadline: float = 60.0) -> float:
    """Seconds until a datagram to 127.0.0.1:port is answered (resent every 50 ms)."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        while time.monotonic() - t0 < deadline:
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                if s.recv(100) == b"ping":
                    return time.monotonic() - t0
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise SystemExit(f"no answer on UDP 127.0.0.1:{port} within {deadline:g} s")


def rtts(port: int, count: int = DATAGRAMS) -> list[float]:
    out = []
    payload = b"x" * 64
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        for _ in range(count):
            t0 = time.perf_counter()
            s.send(payload)
            if s.recv(100) != payload:
                raise SystemExit("a wrong answer")
            out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(len(values) * 0.9) - 1]
    return f"median {statistics.median(values) * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms"


# --- --local ------------------------------------------------------------------------------

class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def recv(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read1(n)

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_exit_status(self) -> int:
        return self.proc.wait()

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def local(runs: int) -> None:
    import shlex

    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo_port = echo.getsockname()[1]

    def serve() -> None:
        while True:
            d, a = echo.recvfrom(65535)
            echo.sendto(d, a)

    threading.Thread(target=serve, daemon=True).start()

    def execute(command: str) -> _Pipe:
        argv = shlex.split(command)
        argv[0] = sys.executable
        return _Pipe(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    direct = rtts(echo_port)
    print(f"direct UDP round trip (no forward): {ms(direct)}")
    for run in range(runs):
        host_port = free_udp_port()
        relay = UDPRelay(HostTarget(ip="127.0.0.1", port=host_port),
                         GuestEnd(ip="127.0.0.1", port=echo_port), execute)
        first = answered_after(host_port)
        print(f"run {run + 1}: relay up -> first answer {first * 1e3:.0f} ms; "
              f"round trip through the relay: {ms(rtts(host_port))}")
        relay.close()


# --- Debian guest ---------------------------------------------------------------------

def limactl(home: Path, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def unix_echo(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"host:" + conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    return server


def guest_run(runs: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="lpu-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="lpu-yaml-", dir="/tmp"))
    host_sock = work / "rev.sock"
    server = unix_echo(host_sock)
    spec = work / f"{NAME}.yaml"
    spec.write_text(DEBIAN_YAML.format(host_sock=host_sock))
    try:
        t0 = time.monotonic()
        limactl(home, "apply", str(spec))
        print(f"apply: {time.monotonic() - t0:.1f} s (Debian, restrictNetwork: true)")
        for run in range(runs):
            port = free_udp_port()
            code = GUEST_ECHO.format(port=port)
            limactl(home, "shell", NAME, "sh", "-c",
                    f"setsid python3 -c \"{code}\" </dev/null >/dev/null 2>&1 & "
                    f"i=0; while ! grep -qi ':{port:04X} 00000000' /proc/net/udp "
                    "&& [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done", timeout=120)
            latency = answered_after(port)
            print(f"run {run + 1}: UDP listen -> answered on the host {latency:.2f} s; "
                  f"round trip through the relay: {ms(rtts(port))}")
        t0 = time.monotonic()
        while True:
            out = subprocess.run(
                [sys.executable, "-m", "lima.cli", "shell", NAME, "python3", "-c",
                 GUEST_REVERSE_CLIENT], env={**os.environ, "LIMA_HOME": str(home),
                                             "PYTHONPATH": str(REPO)},
                capture_output=True, text=True, cwd=REPO, timeout=120)
            if out.returncode == 0 or time.monotonic() - t0 > 60:
                break
            time.sleep(0.5)
        print(f"reverse: guest /tmp/pfu-rev.sock -> host {host_sock}: "
              f"{out.stdout.strip() or out.stderr.strip()[-200:]!r}")
    finally:
        server.close()
        subprocess.run([sys.executable, "-m", "lima.cli", "delete", "--force", NAME],
                       env={**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)},
                       cwd=REPO, capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--local", action="store_true", help="the relay alone, no guest")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.local:
        local(args.runs)
    else:
        guest_run(args.runs)


if __name__ == "__main__":
    main()
