"""Build time and sizes of the images built here, and build:tiny's time to an ssh banner.

Builds each recipe into a fresh temporary cache (XDG_CACHE_HOME), so the build itself is
cold. The downloaded .debs (cache_dir()/build/debs, also debootstrap's cache) are copied
from the real cache first unless --cold-debs is given: "warm packages" is the figure a
rebuild after a recipe tweak sees; --cold-debs adds the downloads from the mirror.
Then boots build:tiny --boots times under TCG and prints qemu start -> `SSH-` banner
and QMP system_powerdown -> qemu exit.

Usage: .venv/bin/python benchmarks/build_images.py [--recipes tiny,debian-12]
       [--cold-debs] [--boots 3]
debian-12 needs root. Guests use user networking with restrict=on (no traffic leaves).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lima import paths
from lima.drivers.images import build
from tests.integration.guestkit import boot, wait_banner

MiB = 1 << 20


def sizes(img: build.BuiltImage) -> str:
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(img.image)],
        capture_output=True, text=True, check=True).stdout)
    parts = [f"qcow2 {img.image.stat().st_size / MiB:.1f} MiB "
             f"(virtual {info['virtual-size'] / MiB:.0f} MiB)"]
    if img.kernel:
        parts.append(f"kernel {img.kernel.stat().st_size / MiB:.1f} MiB")
    if img.initrd:
        parts.append(f"initrd {img.initrd.stat().st_size / MiB:.1f} MiB")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="tiny,debian-12")
    ap.add_argument("--cold-debs", action="store_true")
    ap.add_argument("--boots", type=int, default=3)
    args = ap.parse_args()

    real_debs = build.debs_dir()
    built: dict[str, build.BuiltImage] = {}
    with tempfile.TemporaryDirectory(prefix="lima-bench-") as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp
        if not args.cold_debs and real_debs.is_dir():
            shutil.copytree(real_debs, build.debs_dir())
        state = "cold (packages downloaded)" if args.cold_debs else "warm package cache"
        print(f"build cache: {paths.cache_dir()} (empty build dir, {state})")
        for name in args.recipes.split(","):
            if name == "debian-12" and os.geteuid() != 0:
                print(f"build:{name}: skipped (needs root)")
                continue
            t0 = time.monotonic()
            img = build.build_image(name, progress=False)
            secs = time.monotonic() - t0
            print(f"build:{name}: built in {secs:.1f} s; {sizes(img)}")
            built[name] = img

        if "tiny" in built and args.boots > 0:
            times: list[float] = []
            downs: list[float] = []
            for _ in range(args.boots):
                with tempfile.TemporaryDirectory(prefix="lima-boot-") as work:
                    guest = boot(built["tiny"], Path(work))
                    try:
                        times.append(wait_banner(guest.port, time.monotonic() + 120))
                        downs.append(guest.powerdown())
                    finally:
                        guest.stop()
            times.sort()
            print(f"build:tiny: qemu start -> ssh banner (TCG): min {times[0]:.2f} s, "
                  f"median {times[len(times) // 2]:.2f} s over {len(times)} boots")
            downs.sort()
            print(f"build:tiny: QMP system_powerdown -> qemu exit: median "
                  f"{downs[len(downs) // 2]:.2f} s")


if __name__ == "__main__":
    main()
