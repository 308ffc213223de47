"""What a TAB costs with `limactl completion bash`: the `limactl __complete` call the
script makes, for a verb, an instance name (50 instance directories) and a template name,
against `python3 -c pass` (the interpreter's floor).

A temp LIMA_HOME gets 50 instance directories (a lima.yaml each; completion only lists
them). Each case runs 10 times as a subprocess after one warm-up; medians are printed in
milliseconds. The temp dir is deleted at the end.

Usage: .venv/bin/python benchmarks/completion.py [--runs 10]
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

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "verb (limactl sh<TAB>)": "limactl sh",
    "instance (limactl shell vm1<TAB>)": "limactl shell vm1",
    "template (limactl start template:deb<TAB>)": "limactl start template:deb",
}


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    subprocess.run(argv, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lhc-", dir="/tmp"))
    try:
        home = tmp / "home"
        home.mkdir()
        for i in range(50):
            (home / f"vm{i:02d}").mkdir()
            (home / f"vm{i:02d}" / "lima.yaml").write_text("images: []\n")
        env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPYCACHEPREFIX": str(tmp / "pyc"),
               "PYTHONPATH": str(REPO)}
        floor = median_ms([sys.executable, "-c", "pass"], env, args.runs)
        print(f"python3 -c pass: {floor:.0f} ms")
        for label, line in CASES.items():
            argv = [sys.executable, "-m", "lima.cli", "__complete", "bash", "--", line]
            print(f"{label}: {median_ms(argv, env, args.runs):.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
