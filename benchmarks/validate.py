"""Wall time of `limactl validate template:default`, start-up included (issue 2: <= 150 ms).

Runs the installed console script (.venv/bin/limactl) as a real subprocess, the way a
user does, and prints the median of N runs after 2 warm-ups, next to `python -c pass`
(the interpreter's own floor) and `python -c "import click, yaml"` (the libraries' floor).

Two settings, both reported, because the development environment sets
PYTHONDONTWRITEBYTECODE=1 and the package is installed editable, so by default no .pyc
exists for `lima/` and every run recompiles it; a real user's install has bytecode:
  - "as-is":    the current environment, unchanged;
  - "bytecode": PYTHONDONTWRITEBYTECODE removed and PYTHONPYCACHEPREFIX pointed at a
                temporary directory that `compileall` fills first (so the source tree
                gets no __pycache__ folders).

Usage: .venv/bin/python benchmarks/validate.py [--runs 20] [--locator template:default]
Each run gets a fresh, empty LIMA_HOME in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
WARMUPS = 2


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """(median, min) wall time in milliseconds; every run must succeed."""
    times: list[float] = []
    for i in range(WARMUPS + runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        elapsed = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                     f"{proc.stderr.decode(errors='replace')}")
        if i >= WARMUPS:
            times.append(elapsed)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--locator", default="template:default")
    args = parser.parse_args()

    limactl = str(VENV_BIN / "limactl")
    python = str(VENV_BIN / "python")
    with tempfile.TemporaryDirectory(prefix="lima-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        as_is = {**os.environ, "LIMA_HOME": str(home)}
        compiled = {k: v for k, v in as_is.items() if k != "PYTHONDONTWRITEBYTECODE"}
        compiled["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "lima")],
                       env=compiled, check=True)

        cases = [
            ("python -c pass", [python, "-c", "pass"]),
            ("python -c 'import click, yaml'", [python, "-c", "import click, yaml"]),
            (f"limactl validate {args.locator}", [limactl, "validate", args.locator]),
        ]
        print(f"median (min) of {args.runs} runs after {WARMUPS} warm-ups, in ms")
        print(f"{'command':44} {'as-is':>16} {'bytecode':>16}")
        for label, argv in cases:
            a = median_ms(argv, as_is, args.runs)
            b = median_ms(argv, compiled, args.runs)
            print(f"{label:44} {a[0]:8.1f} ({a[1]:5.1f}) {b[0]:8.1f} ({b[1]:5.1f})")
        print(f"PYTHONDONTWRITEBYTECODE in this environment: "
              f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}; target: <= 150 ms")


if __name__ == "__main__":
    main()
