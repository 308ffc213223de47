"""The cost of an immutable build cache: a cache-hit create, hard links against copies.

For each `build:` image already in the build cache (tiny, and debian-12 when built), on a
private copy of its entry (the shared cache is only read), prints the median of N runs of:
  - before: what a cache hit cost when instances got hard links (the recipe's cache key,
    three os.link, qemu-img info, qemu-img create of diffdisk);
  - after: prepare_disks() of a new instance as it is now, end to end, and its parts:
    re-hashing the entry against sha256sums, copying (reflink where the filesystem has
    it) basedisk/kernel/initrd, the safety check (qemu-img info), the rest (diffdisk and
    basedisk.json);
and the disk space an instance now takes for its own copies.

Usage: .venv/bin/python benchmarks/image_cache.py [--runs 5] [--recipes tiny,debian-12]
Nothing leaves this machine; everything it writes lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def measure(name: str, entry: Path, runs: int) -> None:
    """Print the figures for one sealed entry of the (private) build cache."""
    from lima import paths
    from lima.drivers import runner
    from lima.drivers.images import build, prepare_disks
    from lima.drivers.images.disks import clone_file
    from lima.drivers.images.imagecheck import check_base_image
    from lima.schemas.spec import Image, InstanceSpec, SSHConfig, User

    files = [(entry / n, n2) for n, n2 in (
        (build.IMAGE, paths.BASEDISK), (build.KERNEL, paths.KERNEL),
        (build.INITRD, paths.INITRD)) if (entry / n).exists()]
    size = sum(src.stat().st_size for src, _ in files)
    recipe = build._recipe(name)
    spec = InstanceSpec(
        name="bench", vm_type="qemu", os="Linux", arch="x86_64",
        images=(Image(location=f"build:{name}", arch="x86_64"),), cpus=1,
        memory=1 << 30, disk=10 << 30, mounts=(), mount_type="reverse-sshfs",
        ssh=SSHConfig(), user=User("u", 1000, "", "/home/u.linux", "/bin/bash"))

    def fresh(tag: str, i: int) -> Path:
        d = paths.lima_home() / f"{name}-{tag}-{i}"
        d.mkdir(parents=True)
        return d

    def before(i: int) -> None:
        d = fresh("before", i)
        build.cache_key(recipe.inputs())
        for src, dst in files:
            os.link(src, d / dst)
        runner.run(["qemu-img", "info", "--output=json", d / paths.BASEDISK])
        runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    paths.BASEDISK, d / paths.DIFFDISK, str(spec.disk)])

    def after(i: int) -> None:
        prepare_disks(spec, fresh("after", i))

    def verify(i: int) -> None:
        assert build.entry_problems(entry) == []

    def copy(i: int) -> None:
        d = fresh("copy", i)
        for src, dst in files:
            clone_file(src, d / dst)

    def check(i: int) -> None:
        check_base_image(entry / build.IMAGE, f"build:{name}")

    before_ms = median_ms(before, runs)
    after_ms = median_ms(after, runs)
    verify_ms = median_ms(verify, runs)
    copy_ms = median_ms(copy, runs)
    check_ms = median_ms(check, runs)
    used = sum(os.stat(paths.lima_home() / f"{name}-after-0" / dst).st_blocks * 512
               for _, dst in files)
    print(f"build:{name}: basedisk+kernel+initrd {size / MiB:.1f} MiB, median of {runs}")
    rows = [
        (f"before: hard links (key, link x{len(files)}, qemu-img info, create)",
         f"{before_ms:8.1f} ms"),
        ("after: prepare_disks() end to end",
         f"{after_ms:8.1f} ms ({after_ms - before_ms:+.1f} ms)"),
        ("  of which: re-hash the entry against sha256sums", f"{verify_ms:8.1f} ms"),
        (f"  of which: copy (reflink when possible) x{len(files)}", f"{copy_ms:8.1f} ms"),
        ("  of which: safety check of the basedisk (qemu-img info)", f"{check_ms:8.1f} ms"),
        ("disk space of one instance's copies (was 0: shared inodes)",
         f"{used / MiB:8.1f} MiB"),
    ]
    for label, value in rows:
        print(f"  {label:<62}: {value}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recipes", default="tiny,debian-12")
    args = parser.parse_args()

    # The shared entries, found before the environment points into the work directory.
    from lima.drivers.images import build

    names = args.recipes.split(",")
    shared = {n: build.build_root() / f"{n}-{build.cache_key(build._recipe(n).inputs())}"
              for n in names}
    shared_root = build.build_root()
    work = Path(tempfile.mkdtemp(prefix="lima-bench-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    os.environ["LIMA_HOME"] = str(work / "home")
    root = build.build_root()
    root.mkdir(parents=True)
    if (shared_root / "apt-show.json").exists():
        shutil.copy2(shared_root / "apt-show.json", root / "apt-show.json")
    try:
        for name, entry_src in shared.items():
            if not (entry_src / build.DONE).exists():
                print(f"build:{name}: not in the cache ({entry_src}); skipped")
                continue
            entry = root / entry_src.name
            shutil.copytree(entry_src, entry)  # a copy: the shared entry is never written
            build.build_image(name, progress=False)  # seals it once, as a first use would
            measure(name, entry, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
