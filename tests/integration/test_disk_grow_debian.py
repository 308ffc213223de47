"""A larger `disk:` applied to a running examples/default.yaml guest (the Debian 12 image
built here, `build:debian-12`) grows the guest's root file system at the restart.

How it grows: the driver resizes diffdisk with `qemu-img resize` before qemu starts
(lima.drivers.instance.grow_diffdisk); the image's root file system fills the whole disk
(no partition table, root=LABEL=lima-root), so no growpart is needed and cloud-init's
resizefs module, which runs at every boot, runs `resize2fs /dev/vda`. One boot and one
restart: about four minutes under TCG.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

GiB = 1 << 30


def sizes(limactl: Limactl) -> tuple[int, int]:
    """(the root file system's size, the root disk's size) in bytes, as the guest sees them."""
    df = limactl("shell", "g", "df", "-B1", "--output=size", "/").stdout.split()
    disk = limactl("shell", "g", "lsblk", "-b", "-d", "-n", "-o", "SIZE", "/dev/vda").stdout
    return int(df[-1]), int(disk.strip())


def test_root_file_system_follows_disk(limactl: Limactl, tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    text = (REPO / "examples" / "default.yaml").read_text()
    f.write_text(re.sub(r'(?m)^disk: .*$', 'disk: "6GiB"', text))
    out = limactl("apply", str(f), timeout=900)
    assert "g: running" in out.stdout, out.stderr
    fs_before, disk_before = sizes(limactl)
    assert disk_before == 6 * GiB
    # The 4 GiB image's file system was grown to the disk at the first boot already
    # (ext4's own metadata takes a few per cent).
    assert 0.95 * 6 * GiB < fs_before <= 6 * GiB

    f.write_text(re.sub(r'(?m)^disk: .*$', 'disk: "8GiB"', text))
    out = limactl("apply", str(f), timeout=900)
    assert "g: running (restarted)" in out.stdout, out.stdout + out.stderr
    fs_after, disk_after = sizes(limactl)
    assert disk_after == 8 * GiB
    assert 0.95 * 8 * GiB < fs_after <= 8 * GiB
    assert fs_after - fs_before > 1.9 * GiB
    assert len(qemu_pids_for(limactl.home)) == 1
    rec = json.loads(limactl("list", "--format", "json", "g").stdout)
    assert (rec["status"], rec["disk"]) == ("Running", 8 * GiB)
    print(f"root file system: {fs_before} -> {fs_after} bytes "
          f"(disk {disk_before} -> {disk_after})")
    limactl("delete", "-f", "g", timeout=300)
