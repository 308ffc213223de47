"""What `limactl clone` and `limactl rename` cost for an instance with real disk sizes.

Builds a stopped instance directory in a temporary LIMA_HOME: a basedisk (a copy of the
build cache's debian-12 image when there is one, else a qcow2 holding --size-mib MiB of
data) and a diffdisk (qcow2) holding --diff-mib MiB the "guest" wrote. Prints the
median of N runs of:
  - clone: lima.drivers.instcopy.clone_instance (reflink where the filesystem has it, else
    a sparse copy of every file), and the bytes the clone takes on disk;
  - a plain read-and-write copy of the same two disks (shutil.copyfile), for comparison;
  - rename: lima.drivers.instcopy.rename_instance (one rename(2) and a few unlinks).

Usage: .venv/bin/python benchmarks/clone.py [--runs 5] [--size-mib 150] [--diff-mib 64]
Nothing leaves this machine; everything it writes lives in a temporary directory.
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
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20


def median_ms(fn: Callable[[int], None], runs: int) -> float:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def cached_debian_image() -> Path | None:
    build = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lima" / "build"
    found = sorted(build.glob("debian-12-*/image.qcow2"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def make_instance(home: Path, size_mib: int, diff_mib: int) -> Path:
    inst = home / "src"
    inst.mkdir(parents=True)
    image = cached_debian_image()
    if image is not None:
        shutil.copy(image, inst / "basedisk")
        print(f"basedisk: a copy of {image}")
    else:
        raw = home / "base.raw"
        with raw.open("wb") as f:
            f.write(os.urandom(size_mib * MiB))
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(inst / "basedisk")],
                       check=True)
        raw.unlink()
        print(f"basedisk: {size_mib} MiB of random data (no debian-12 build in the cache)")
    # The diffdisk's bytes are what a copy costs; its backing file does not change that.
    raw = home / "diff.raw"
    with raw.open("wb") as f:
        f.write(os.urandom(diff_mib * MiB))
        f.truncate(4096 * MiB)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(inst / "diffdisk")],
                   check=True)
    raw.unlink()
    (inst / "lima.yaml").write_text("images: []\n")
    (inst / "lima-version").write_text("2.2.0")
    return inst


def used_mib(path: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / MiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=150)
    ap.add_argument("--diff-mib", type=int, default=64)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lh-bench-clone-", dir="/tmp"))
    os.environ["LIMA_HOME"] = str(home)
    from lima.drivers import instcopy

    try:
        src = make_instance(home, args.size_mib, args.diff_mib)
        print(f"source: basedisk {(src / 'basedisk').stat().st_size / MiB:.0f} MiB, diffdisk "
              f"{(src / 'diffdisk').stat().st_size / MiB:.0f} MiB; {used_mib(src):.0f} MiB "
              f"used")

        def clone(i: int) -> None:
            instcopy.clone_instance(src, f"c{i}")

        ms = median_ms(clone, args.runs)
        print(f"clone:           {ms:8.1f} ms (median of {args.runs}); the clone uses "
              f"{used_mib(home / 'c0'):.0f} MiB")

        def plain_copy(i: int) -> None:
            d = home / f"cp{i}"
            d.mkdir()
            for name in ("basedisk", "diffdisk"):
                shutil.copyfile(src / name, d / name)

        print(f"shutil.copyfile: {median_ms(plain_copy, args.runs):8.1f} ms (the two disks, "
              f"read and written whole)")

        def rename(i: int) -> None:
            instcopy.rename_instance(home / f"c{i}", f"r{i}")

        print(f"rename:          {median_ms(rename, args.runs):8.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
