"""Mount read throughput: a 100 MB host file read in the guest over 9p, virtiofs and
reverse-sshfs, against scp of the same file into the guest.

One Debian guest (`build:debian-12`, restrict=on) in a private LIMA_HOME under /tmp:
1. booted with `mountType: 9p`, the host directory mounted read-only at /mnt/bench;
   in the guest, after dropping the page cache, `dd if=/mnt/bench/data of=/dev/null bs=1M`
   (dd's own byte count and seconds);
2. baseline: `scp -F ssh.config data lima-bench:/dev/null` from the host, wall time (scp's
   SFTP mode prints "remote fsetstat: Bad message" for /dev/null; the copy is complete);
3. `mountType: virtiofs` applied (the guest restarts; QEMU's virtiofsd), the same dd;
4. `mountType: reverse-sshfs` applied, the same dd.
Each figure is the median of --runs runs, printed in MB/s (10^6 bytes per second).

Usage: .venv/bin/python benchmarks/mounts.py [--runs 3] [--size-mb 100]
The instance is deleted at the end (its qemu and host agent stopped by `limactl delete -f`,
then any leftover killed by PID) and the benchmark LIMA_HOME removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"
SPEC = """images:
- location: build:debian-12
  arch: x86_64
cpus: 2
memory: 2GiB
disk: 6GiB
mountType: {mount_type}
mounts:
- location: {location}
  mountPoint: /mnt/bench
vmOpts:
  qemu:
    restrictNetwork: true
"""
_DD = re.compile(r"^(\d+) bytes .* copied, ([0-9.]+) s", re.M)


def limactl(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], cwd=REPO,
                          env={**os.environ, "LIMA_HOME": str(home)}, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"limactl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def guest_read(home: Path) -> float:
    """MB/s of one cold read of /mnt/bench/data in the guest."""
    out = limactl(home, "shell", NAME, "sh", "-c",
                  "sync; echo 3 | sudo tee /proc/sys/vm/drop_caches >/dev/null; "
                  "dd if=/mnt/bench/data of=/dev/null bs=1M 2>&1").stdout
    m = _DD.search(out)
    if m is None:
        raise SystemExit(f"unexpected dd output: {out!r}")
    return int(m.group(1)) / float(m.group(2)) / 1e6


def scp_rate(home: Path, data: Path) -> float:
    config = home / NAME / "ssh.config"
    start = time.monotonic()
    subprocess.run(["scp", "-q", "-F", str(config), str(data), f"lima-{NAME}:/dev/null"],
                   check=True, timeout=600)
    return data.stat().st_size / (time.monotonic() - start) / 1e6


def median(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} MB/s  (runs: {', '.join(f'{v:.1f}' for v in values)})"


def kill_leftovers(home: Path) -> None:
    for inst in home.iterdir() if home.is_dir() else ():
        daemons = [(p.name, b"virtiofsd") for p in inst.glob("virtiofsd-*.pid")]
        for pidfile, needle in (("ha.pid", b"hostagent"), ("qemu.pid", b"qemu-system"),
                                *daemons):
            try:
                pid = int((inst / pidfile).read_text().strip())
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lbm-", dir="/tmp"))
    share = home.parent / (home.name + "-share")
    share.mkdir()
    data = share / "data"
    with open(data, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    spec = home.parent / (home.name + ".yaml")
    results: dict[str, list[float]] = {}
    try:
        for mount_type in ("9p", "virtiofs", "reverse-sshfs"):
            spec.write_text(SPEC.format(mount_type=mount_type, location=share))
            start = time.monotonic()
            limactl(home, "apply", "--name", NAME, str(spec))
            print(f"{mount_type}: guest up in {time.monotonic() - start:.0f} s", flush=True)
            guest_read(home)  # a first read warms the guest's binaries, not the data
            results[mount_type] = [guest_read(home) for _ in range(args.runs)]
            if "scp" not in results:
                results["scp"] = [scp_rate(home, data) for _ in range(args.runs)]
        print(f"read of a {args.size_mb} MiB host file in the guest (cold page cache):")
        for key in ("9p", "virtiofs", "reverse-sshfs", "scp"):
            print(f"  {key:14s} {median(results[key])}")
    finally:
        with_timeout = subprocess.run(
            [sys.executable, "-m", "lima.cli", "delete", "-f", NAME], cwd=REPO,
            env={**os.environ, "LIMA_HOME": str(home)}, capture_output=True, timeout=300)
        if with_timeout.returncode != 0:
            kill_leftovers(home)
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(share, ignore_errors=True)
        spec.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
