"""Figures for `video.display: vnc` and the readiness probes' retry budget, on the tiny guest.

1. VNC: `limactl apply` of examples/tiny.yaml plus `video.display: vnc` on a free display
   (no `to=`: the port is known in advance). From the moment qemu.pid appears, 127.0.0.1:PORT
   is polled every 5 ms until QEMU answers with its RFB banner; printed: qemu start (from
   /proc/PID/stat) -> RFB banner, qemu start -> vncpassword written (the display takes a
   password from then on), and apply's total. One cold run (create included), then RUNS-1
   `limactl start`s of the stopped instance.
2. Probes: a probe that passes once the guest's uptime reaches PASS_AT seconds (it appends
   the uptime of every attempt to /tmp/probe-attempts in the guest), with the default budget
   (no LIMAPY_PROBE_* set: 3 s interval, 600 s per probe). Printed: the attempts' guest
   uptimes, their spacing, the uptime at which it passed, and whether the instance ended
   Running without Degraded. With the old 90 s budget this probe failed.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/vnc_probes.py [--runs 3] [--pass-at 150]
       [--only vnc|probes]
Guests use restrict=on (nothing leaves the machine); every instance is deleted with
`limactl delete -f` and the private LIMA_HOME under /tmp is removed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.boot import stat_start_ticks  # noqa: E402 (after the sys.path line above)

TINY = (REPO / "examples" / "tiny.yaml").read_text()


def _limactl(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIMA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, check=True,
                          capture_output=True, text=True, timeout=timeout)


def _popen(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LIMA_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "lima.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_unix(pid: int) -> float | None:
    try:
        ticks = stat_start_ticks(Path(f"/proc/{pid}/stat").read_text())
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _free_display() -> int:
    for number in range(70, 99):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 5900 + number))
            except OSError:
                continue
        return number
    raise SystemExit("no free VNC port in 5970..5998")


def _banner(port: int) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(12)
    except OSError:
        return None


def vnc_run(home: Path, args: list[str], inst: Path, port: int) -> dict[str, float | None]:
    for stale in ("qemu.pid",):
        (inst / stale).unlink(missing_ok=True)
    t0 = time.time()
    proc = _popen(home, *args)
    pid = None
    banner_at = password_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (banner_at is None or password_at is None):
        if pid is None:
            try:
                pid = int((inst / "qemu.pid").read_text().strip() or 0) or None
            except (OSError, ValueError):
                pid = None
        if pid is not None and banner_at is None and _banner(port) == b"RFB 003.008\n":
            banner_at = time.time()
        if password_at is None and (inst / "vncpassword").exists():
            password_at = time.time()
        if proc.poll() is not None and banner_at is None:
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=600)
    done = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed:\n{err}")
    qemu_start = _start_unix(pid) if pid else None

    def since(t: float | None) -> float | None:
        return t - qemu_start if t is not None and qemu_start is not None else None

    return {"banner": since(banner_at), "password": since(password_at), "total": done - t0}


def bench_vnc(home: Path, runs: int) -> None:
    number = _free_display()
    spec = home / "v.yaml"
    spec.write_text(TINY + f"video:\n  display: vnc\n  vnc:\n    display: 127.0.0.1:{number}\n")
    inst = home / "v"
    results = []
    for i in range(runs):
        args = ["apply", str(spec)] if i == 0 else ["start", "v"]
        r = vnc_run(home, args, inst, 5900 + number)
        results.append(r)
        print(f"vnc run {i + 1} ({args[0]}): qemu start -> RFB banner {_fmt(r['banner'])}, "
              f"-> vncpassword {_fmt(r['password'])}; {args[0]} total {_fmt(r['total'])}",
              flush=True)
        _limactl(home, "stop", "v")
    for key in ("banner", "password"):
        values = [r[key] for r in results if r[key] is not None]
        if values:
            print(f"vnc median qemu start -> {key}: {statistics.median(values):.2f} s "
                  f"(n={len(values)})")
    _limactl(home, "delete", "-f", "v")


def bench_probes(home: Path, pass_at: int) -> None:
    spec = home / "p.yaml"
    spec.write_text(TINY + f"""\
probes:
- description: guest uptime reaches {pass_at} s
  script: |
    #!/bin/sh
    up=$(cut -d. -f1 /proc/uptime)
    echo "$up" >> /tmp/probe-attempts
    [ "$up" -ge {pass_at} ]
  hint: this probe only waits
""")
    env_note = {k: v for k, v in os.environ.items() if k.startswith("LIMAPY_PROBE_")}
    t0 = time.time()
    _limactl(home, "apply", str(spec), timeout=900)
    total = time.time() - t0
    attempts = [int(x) for x in _limactl(home, "shell", "p", "cat", "/tmp/probe-attempts")
                .stdout.split()]
    rec = json.loads(_limactl(home, "list", "--format", "json", "p").stdout)
    degraded = [c for c in rec.get("conditions", []) if c["type"] == "Degraded"
                and c["status"] == "True"]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    print(f"probe (env overrides: {env_note or 'none'}): {len(attempts)} attempts at guest "
          f"uptime {attempts[0]}..{attempts[-1]} s, spacing median "
          f"{statistics.median(gaps) if gaps else 0:.0f} s; passed at {attempts[-1]} s "
          f"(asked: {pass_at} s); apply total {total:.1f} s; status {rec['status']}"
          f"{', Degraded: ' + degraded[0]['message'] if degraded else ', not degraded'}")
    _limactl(home, "delete", "-f", "p")


def _fmt(v: float | None) -> str:
    return f"{v:.2f} s" if v is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pass-at", type=int, default=150)
    ap.add_argument("--only", choices=("vnc", "probes"), default=None)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lvp", dir="/tmp"))
    print(f"vnc/probes benchmark: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    try:
        if args.only in (None, "vnc"):
            bench_vnc(home, args.runs)
        if args.only in (None, "probes"):
            bench_probes(home, args.pass_at)
    finally:
        for inst in (p for p in home.iterdir() if (p / "lima.yaml").is_file()):
            subprocess.run([sys.executable, "-m", "lima.cli", "delete", "-f", inst.name],
                           env={**os.environ, "LIMA_HOME": str(home)}, capture_output=True,
                           timeout=120, check=False)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
