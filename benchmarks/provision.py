"""What provisioning costs on the tiny guest: `limactl apply` to running with no provision
steps, then with STEPS system steps, a data file, a probe and a copyToHost rule, and the
host-side cost of building the seed (yq compiled, labels) for that spec.

For each variant, in a private LIMA_HOME under /tmp: apply (cold: create included), stop,
then apply again (warm) RUNS times; prints the median seconds to `running` of the warm
runs. The difference divided by STEPS is the cost of one step (boot.sh's per-step output
file and the label lookup included). Guests use restrict=on; every qemu and host agent is
stopped through `limactl delete -f`, and the LIMA_HOME is removed.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/provision.py [--steps 20] [--runs 3]
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

TINY = "base: template:tiny\nvmOpts:\n  qemu:\n    restrictNetwork: true\n"


def _spec(steps: int) -> str:
    if not steps:
        return TINY
    text = TINY + "provision:\n"
    for i in range(steps):
        text += f"- mode: system\n  script: |\n    #!/bin/sh\n    echo step {i} > /run/step-{i}\n"
    text += ("- mode: data\n  path: /etc/bench.conf\n  content: x\n"
             "probes:\n- script: |\n    #!/bin/sh\n    test -e /run/step-0\n"
             "copyToHost:\n- guest: /run/step-0\n  host: \"{{.Dir}}/copied/step-0\"\n"
             "  deleteOnStop: true\n")
    return text


def _limactl(home: Path, *args: str) -> float:
    env = {**os.environ, "LIMA_HOME": str(home)}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, check=True,
                   capture_output=True, text=True, timeout=900)
    return time.monotonic() - start


def _measure(home: Path, name: str, text: str, runs: int) -> tuple[float, list[float]]:
    f = home / f"{name}.yaml"
    f.write_text(text)
    try:
        cold = _limactl(home, "apply", str(f))
        warm = []
        for _ in range(runs):
            _limactl(home, "stop", name)
            warm.append(_limactl(home, "start", name))
        return cold, warm
    finally:
        subprocess.run([sys.executable, "-m", "lima.cli", "delete", "-f", name],
                       env={**os.environ, "LIMA_HOME": str(home)}, capture_output=True,
                       timeout=300, check=False)


def _seed_cost(steps: int) -> float:
    from lima import schemas
    from lima.drivers import cidata

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        f = Path(tmp) / "b.yaml"
        f.write_text(_spec(steps))
        spec = schemas.resolve(str(f), name="b").spec
        start = time.perf_counter()
        for _ in range(20):
            cidata.seed_files(spec, iid="i", keys=["k"], host_env={}, host_home=None)
        return (time.perf_counter() - start) / 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lh-bprov-", dir="/tmp"))
    try:
        results = {}
        for name, steps in (("b0", 0), ("bn", args.steps)):
            cold, warm = _measure(home, name, _spec(steps), args.runs)
            results[steps] = statistics.median(warm)
            print(f"{steps:3d} steps: cold apply {cold:6.1f} s; warm start median "
                  f"{results[steps]:6.1f} s ({', '.join(f'{w:.1f}' for w in warm)})")
        per = (results[args.steps] - results[0]) / max(1, args.steps)
        print(f"per step (system step, with data+probe+copyToHost spread): {per:.2f} s")
        print(f"seed files for {args.steps} steps: {_seed_cost(args.steps) * 1000:.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
