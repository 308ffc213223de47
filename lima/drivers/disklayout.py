"""Which disk files an instance directory holds: limapy's (`basedisk` + the qcow2 overlay
`diffdisk`) or real Lima 2.x's (`disk`, the whole boot disk, and `iso` for an ISO image).

Lima 2 renames the image it downloaded (`image`) to `disk`, or to `iso` beside a blank
`disk`; an instance made by an older Lima and started by Lima 2 gets `disk -> diffdisk` (and
`iso -> basedisk`) symlinks, which are limapy's own layout. Read by the QEMU argv
(lima.drivers.qemu), the disk checks and repair (imagecheck, repair, disks), the store's
status and the driver's observe, so a directory made by Lima is booted from its own disk
and never gets new disks prepared beside it. Pure path checks: nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from lima import paths

# Lima 2's names (its pkg/limatype/filenames).
LIMA_DISK = "disk"
LIMA_ISO = "iso"
LIMA_IMAGE = "image"


def lima2_disk(inst_dir: Path) -> Path | None:
    """`disk` when the directory is laid out by Lima 2 (a `disk` that is not a symlink to
    this instance's `diffdisk`); None for limapy's layout."""
    disk = inst_dir / LIMA_DISK
    if not disk.is_file():
        return None
    diffdisk = inst_dir / paths.DIFFDISK
    try:
        if diffdisk.exists() and os.path.samefile(disk, diffdisk):
            return None  # Lima 2's link to the legacy disk: limapy's own layout
    except OSError:
        pass
    return disk


def lima2_iso(inst_dir: Path) -> Path | None:
    """Lima 2's `iso` (the image booted as a CD) beside its `disk`, when there is one."""
    iso = inst_dir / LIMA_ISO
    return iso if lima2_disk(inst_dir) is not None and iso.is_file() else None


def lima2_pending(inst_dir: Path) -> bool:
    """Whether Lima 2 laid the directory out: its `disk`, or the `image` it downloaded
    and would have made `disk` from (lima.drivers.images.repair finishes that)."""
    return lima2_disk(inst_dir) is not None or (inst_dir / LIMA_IMAGE).is_file()


def boot_disk(inst_dir: Path) -> Path:
    """The writable disk QEMU boots: Lima 2's `disk`, else `diffdisk`."""
    return lima2_disk(inst_dir) or inst_dir / paths.DIFFDISK


def disks_present(inst_dir: Path) -> bool:
    """Whether the boot disks are there (nothing needs preparing)."""
    if lima2_disk(inst_dir) is not None:
        return True
    return (inst_dir / paths.BASEDISK).exists() and (inst_dir / paths.DIFFDISK).exists()
