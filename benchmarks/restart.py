"""Restart-class edit figures of issue 8: `limactl apply` of a changed `cpus` on a running
tiny guest, until it is Running again, against a `limactl stop` plus a `limactl start` done
by hand (target: apply <= 1.2x the manual pair).

In a private LIMA_HOME under /tmp, examples/tiny.yaml is applied once; then, interleaved
(ABAB..., order alternating so machine load hits both alike), each run times:
  A. apply: edit cpus (1 <-> 2) and `limactl apply FILE` (one stop, one boot);
  B. by hand: `limactl stop NAME` then `limactl start NAME` (wall time of both processes).
Prints every run, the medians and the ratio A/B. Guests use restrict=on networking.
Usage: PYTHONPATH=. .venv/bin/python benchmarks/restart.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "tiny.yaml"


def limactl(home: Path, *args: str) -> float:
    """Run limactl; its wall time in seconds (raises on failure)."""
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lrb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="lrb-yaml-"))
    spec = work / "tiny.yaml"
    original = EXAMPLE.read_text()
    spec.write_text(original)
    try:
        print(f"first apply (create + boot): {limactl(home, 'apply', str(spec)):.1f} s")
        applies: list[float] = []
        by_hand: list[float] = []
        cpus = 1
        for run in range(args.runs):
            for kind in (("apply", "hand") if run % 2 == 0 else ("hand", "apply")):
                if kind == "apply":
                    cpus = 3 - cpus
                    spec.write_text(original + f"cpus: {cpus}\n")
                    took = limactl(home, "apply", str(spec))
                    applies.append(took)
                else:
                    took = limactl(home, "stop", "tiny") + limactl(home, "start", "tiny")
                    by_hand.append(took)
                print(f"run {run + 1}: {kind:<5} {took:6.2f} s")
        a, b = statistics.median(applies), statistics.median(by_hand)
        print(f"median apply (restart-class edit) {a:.2f} s; stop + start by hand {b:.2f} s;"
              f" ratio {a / b:.2f} (target <= 1.2)")
    finally:
        subprocess.run([sys.executable, "-m", "lima.cli", "stop", "-f", "tiny"],
                       env={**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)},
                       cwd=REPO, capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
