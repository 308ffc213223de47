"""Snapshot figures of issue 11: `limactl snapshot create` and `apply` on the tiny guest,
running (HMP savevm/loadvm: memory + disk) and stopped (qemu-img on the diffdisk), against
the same `qemu-img snapshot -c/-a` run by hand on the stopped disk.

In a private LIMA_HOME under /tmp, examples/tiny.yaml is applied once. Each run, running:
create a new tag, change a file, apply the tag, then a first `limactl shell` (the guest
usable again); then stopped: create, apply, and the bare qemu-img pair. Wall times of whole
processes. Prints every run, the medians and the saved VM state size.
Usage: PYTHONPATH=. .venv/bin/python benchmarks/snapshot.py [--runs 5]
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


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return took, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lsnap-", dir="/tmp"))
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO)}

    def limactl(*a: str) -> tuple[float, str]:
        return timed([sys.executable, "-m", "lima.cli", *a], env)

    figures: dict[str, list[float]] = {k: [] for k in (
        "running create", "running apply", "first shell after apply", "stopped create",
        "stopped apply", "qemu-img -c by hand", "qemu-img -a by hand")}
    disk = home / "tiny" / "diffdisk"
    try:
        print(f"apply (create + boot): {limactl('apply', str(EXAMPLE))[0]:.1f} s")
        for run in range(args.runs):
            tag = f"r{run}"
            limactl("shell", "tiny", "sh", "-c", "echo before > /tmp/f")
            figures["running create"].append(limactl("snapshot", "create", "tiny", "--tag",
                                                     tag)[0])
            limactl("shell", "tiny", "sh", "-c", "echo after > /tmp/f")
            figures["running apply"].append(limactl("snapshot", "apply", "tiny", "--tag",
                                                    tag)[0])
            took, out = limactl("shell", "tiny", "cat", "/tmp/f")
            if out.strip() != "before":
                raise SystemExit(f"run {run + 1}: /tmp/f holds {out.strip()!r} after apply")
            figures["first shell after apply"].append(took)
        _, table = limactl("snapshot", "list", "tiny")
        sizes = [" ".join(line.split()[2:4]) for line in table.splitlines()[1:]]
        limactl("stop", "tiny")
        for run in range(args.runs):
            tag = f"s{run}"
            figures["stopped create"].append(limactl("snapshot", "create", "tiny", "--tag",
                                                     tag)[0])
            figures["stopped apply"].append(limactl("snapshot", "apply", "tiny", "--tag",
                                                    tag)[0])
            figures["qemu-img -c by hand"].append(
                timed(["qemu-img", "snapshot", "-c", f"h{run}", str(disk)])[0])
            figures["qemu-img -a by hand"].append(
                timed(["qemu-img", "snapshot", "-a", f"h{run}", str(disk)])[0])
        for name, values in figures.items():
            runs = " ".join(f"{v:.2f}" for v in values)
            print(f"{name:<26} median {statistics.median(values):6.2f} s   runs: {runs}")
        print(f"VM state per running snapshot (tiny guest, 256 MiB RAM): {', '.join(sizes)}")
    finally:
        subprocess.run([sys.executable, "-m", "lima.cli", "stop", "-f", "tiny"], env=env,
                       cwd=REPO, capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
