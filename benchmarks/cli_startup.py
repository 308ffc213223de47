"""Start-up time of the CLI: `limactl list` over 50 instances, `limactl list -q`,
`limactl --help`, `limactl start|edit --help` (the edit flags' verbs), against
`python3 -c pass` (the interpreter's own floor).

A temp LIMA_HOME gets one instance made by `limactl create` from a local qcow2 image
(`qemu-img create`, no download, no guest), copied to 50 directories (lima.yaml,
lima-version; the disks are linked). Each command then runs 10 times as a subprocess and
the medians are printed, in milliseconds, after one warm-up run (bytecode is cached under
the temp dir, as an installed limapy has .pyc files). The temp dir is deleted at the end.

Usage: .venv/bin/python benchmarks/cli_startup.py [--runs 10] [--repo DIR]
(--repo: measure the limapy tree at DIR instead of this one, e.g. main's, for a before/after
under the same load; the instances are made by this tree.)
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
INSTANCES = 50


def make_home(home: Path, env: dict[str, str]) -> None:
    img = home.parent / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    spec = home.parent / "vm00.yaml"
    spec.write_text(
        f"images:\n- location: {img}\n  arch: x86_64\narch: x86_64\ncpus: 1\nmemory: 512MiB\n"
        "disk: 1GiB\nmounts: []\nvmOpts:\n  qemu:\n    restrictNetwork: true\n")
    subprocess.run([sys.executable, "-m", "lima.cli", "create", str(spec)], env=env,
                   check=True, capture_output=True)
    first = home / "vm00"
    for i in range(1, INSTANCES):
        d = home / f"vm{i:02d}"
        d.mkdir()
        for f in first.iterdir():
            if f.is_file() and f.stat().st_size < 1 << 20:
                shutil.copy2(f, d / f.name)
            elif f.is_file():
                os.link(f, d / f.name)


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)  # warm the caches
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repo", type=Path, default=REPO)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    try:
        home = tmp / "lima"
        home.mkdir()
        env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO),
               "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
        # Bytecode cached (under the temp dir), as an installed limapy has its .pyc files.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        make_home(home, env)
        time.sleep(2.1)  # files younger than 2 s are not cached by `list` (listcache.RACY_NS)
        env["PYTHONPATH"] = str(args.repo.resolve())
        script = Path(sys.executable).parent / "limactl"  # the installed entry point
        limactl = [str(script)] if script.exists() else [sys.executable, "-m", "lima.cli"]
        cases = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            f"limactl list ({INSTANCES} instances)": [*limactl, "list"],
            f"limactl list --json ({INSTANCES} instances)": [*limactl, "list", "--json"],
            "limactl list -q": [*limactl, "list", "-q"],
            "limactl --help": [*limactl, "--help"],
            # the verbs with Lima's edit flags (lima.editflags imported)
            "limactl start --help": [*limactl, "start", "--help"],
            "limactl edit --help": [*limactl, "edit", "--help"],
        }
        for label, argv in cases.items():
            print(f"{label:40s} {median_ms(argv, env, args.runs):7.1f} ms (median of {args.runs})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
