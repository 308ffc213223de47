"""Suspend/resume figures of issue 11, side by side with a cold boot of the same instance.

In a private LIMA_HOME under /tmp, the example (examples/tiny.yaml, or examples/default.yaml
with --example default: the Debian image, run under `flock /tmp/limapy-debian.lock`) is
applied once, as it is (the Debian example's mounts are 9p: the suspend unmounts them in
the guest first, the resume mounts them again); then each run times, in this order:
  1. `limactl suspend NAME` (wall time) and the size of suspend.state;
  2. resume: `limactl start NAME` -> the host agent's "ssh is ready" log line (ssh login
     works and the boot's marker is read) and -> the command's exit (Running);
  3. `limactl stop NAME`, then a cold `limactl start NAME` -> "ssh is ready" and -> Running.
Prints every run and the medians. Guests use user networking with restrict=on.
Usage: PYTHONPATH=. .venv/bin/python benchmarks/suspend.py [--runs 3] [--example tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = {"tiny": REPO / "examples" / "tiny.yaml", "default": REPO / "examples" / "default.yaml"}
NAME = "bench"


def limactl(home: Path, *args: str, check: bool = True) -> float:
    """Run limactl; its wall time in seconds (raises on failure)."""
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)}
    # As installed: modules compiled once, not again in every limactl and host agent.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    took = time.monotonic() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return took


def ssh_ready_at(home: Path) -> float:
    """The wall time of the host agent's "ssh is ready" line (ha.stderr.log, this run's)."""
    for line in (home / NAME / "ha.stderr.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if str(entry.get("msg", "")).startswith("ssh is ready"):
                return datetime.fromisoformat(entry["time"]).timestamp()
    raise SystemExit("no 'ssh is ready' line in ha.stderr.log")


def timeline(home: Path, began: float) -> list[tuple[float, str]]:
    """The host agent's log lines of this start (ha.stderr.log): (seconds since `began`,
    message), in order."""
    out: list[tuple[float, str]] = []
    for line in (home / NAME / "ha.stderr.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["time"]).timestamp() - began
            out.append((at, str(entry.get("msg", ""))[:110]))
    return out


def timed_start(home: Path, show: bool = False) -> tuple[float, float]:
    """`limactl start`: (seconds to ssh ready, seconds to Running); `show` prints the
    host agent's timeline."""
    began = time.time()
    took = limactl(home, "start", NAME)
    if show:
        for at, msg in timeline(home, began):
            print(f"    {at:6.2f} s  {msg}")
        print(f"    {took:6.2f} s  limactl start returned (Running)")
    return ssh_ready_at(home) - began, took


@contextlib.contextmanager
def debian_lock(example: str) -> Iterator[None]:
    if example != "default":
        yield
        return
    with open("/tmp/limapy-debian.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def kill_leftovers(home: Path) -> None:
    for pidfile in ("ha.pid", "qemu.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((home / NAME / pidfile).read_text())
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--example", choices=sorted(EXAMPLES), default="tiny")
    parser.add_argument("--no-cold", action="store_true",
                        help="only suspend and resume (no stop and cold start in each run)")
    parser.add_argument("--timeline", action="store_true",
                        help="print the host agent's log of each resume, timed from its start")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lsb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="lsb-yaml-"))
    spec = work / f"{NAME}.yaml"
    shutil.copy(EXAMPLES[args.example], spec)
    suspends, sizes, resume_ssh, resume_run, cold_ssh, cold_run = [], [], [], [], [], []
    try:
        with debian_lock(args.example):
            limactl(home, "apply", str(spec))
            for run in range(1, args.runs + 1):
                took = limactl(home, "suspend", NAME)
                size = (home / NAME / "suspend.state").stat().st_size
                suspends.append(took)
                sizes.append(size)
                r_ssh, r_run = timed_start(home, show=args.timeline)
                resume_ssh.append(r_ssh)
                resume_run.append(r_run)
                c_ssh, c_run = float("nan"), float("nan")
                if not args.no_cold:
                    limactl(home, "stop", NAME)
                    c_ssh, c_run = timed_start(home)
                cold_ssh.append(c_ssh)
                cold_run.append(c_run)
                print(f"run {run}: suspend {took:5.2f} s, state {size / 2**20:6.1f} MiB; "
                      f"resume -> ssh {r_ssh:5.2f} s, -> running {r_run:5.2f} s; "
                      f"cold -> ssh {c_ssh:5.2f} s, -> running {c_run:5.2f} s", flush=True)
        med = statistics.median
        print(f"{args.example}, medians of {args.runs}: suspend {med(suspends):.2f} s, "
              f"saved state {med(sizes) / 2**20:.1f} MiB; resume to ssh-ready "
              f"{med(resume_ssh):.2f} s (to Running {med(resume_run):.2f} s) against a cold "
              f"boot's {med(cold_ssh):.2f} s (to Running {med(cold_run):.2f} s)")
    finally:
        limactl(home, "stop", "-f", NAME, check=False)
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
