"""Disk images for instances: the download cache, decompression and disk placement.

The driver calls `prepare_disks(spec, inst_dir)` when it creates an instance; it picks
an `images[]` candidate, fetches it through the digest-checked download cache
(`download`), a local copy, or a `build:NAME` image (`build`, built on this machine),
and writes basedisk, diffdisk, kernel, kernel.cmdline and initrd. The driver calls
`check_instance_disks(inst_dir)` before each boot. `limactl prune` uses
`download.cache_entries()` / `download.prune()`.
"""

from __future__ import annotations

from lima.drivers.images.disks import candidates, create_diffdisk, prepare_disks

# The submodule `download` keeps its name: no function here may shadow it.
from lima.drivers.images.download import Fetched, Timeouts, cache_entries, cache_key, entry_dir
from lima.drivers.images.imagecheck import check_instance_disks, qemu_img_info

__all__ = [
    "Fetched",
    "Timeouts",
    "cache_entries",
    "cache_key",
    "candidates",
    "check_instance_disks",
    "create_diffdisk",
    "entry_dir",
    "prepare_disks",
    "qemu_img_info",
]
