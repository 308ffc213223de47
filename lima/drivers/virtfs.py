"""Shared facts of the 9p and virtiofs mounts: the device tag, QEMU's device options and the
guest's mount options, all pure.

Called by lima.drivers.qemu (the `-virtfs` arguments; virtiofs's devices and daemons are in
lima.drivers.virtiofs), by
lima.drivers.cloudconfig (the shares' fstab lines on the seed) and by lima.drivers.mounts
(the host agent checks, and if needed mounts, each one over ssh after boot). Values follow
Lima: the tag is `lima-` + the first 8 bytes of sha256("LOCATION:MOUNTPOINT") in hex, the
options are Lima's fstab options.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lima.errors import SpecError
from lima.schemas.sizes import parse_size
from lima.schemas.spec import InstanceSpec, Mount

VIRTFS_TYPES = ("9p", "virtiofs")
TAG_PREFIX = "lima-"  # a device tag, not the guest host name


def mount_tag(location: str, mount_point: str) -> str:
    """The device tag the guest mounts by (stable for one location and mount point)."""
    digest = hashlib.sha256(f"{location}:{mount_point}".encode()).hexdigest()
    return TAG_PREFIX + digest[:16]


def uses_virtfs(spec: InstanceSpec) -> bool:
    """Whether the spec's mounts are QEMU devices (9p, virtiofs) rather than host-driven."""
    return spec.mount_type in VIRTFS_TYPES and bool(spec.mounts)


def size_bytes(value: object) -> int:
    # The spec was validated, so this fails only for a spec built by hand (tests).
    try:
        return parse_size(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise SpecError(str(exc)) from None


def guest_options(mount_type: str, m: Mount) -> str:
    """The guest's mount options (fstab column 4) of a 9p/virtiofs mount, as Lima's."""
    opts = "rw" if m.writable else "ro"
    if mount_type == "9p":
        nine = dict(m.nine_p)
        opts += ",trans=virtio"
        opts += f",version={nine.get('protocolVersion') or '9p2000.L'}"
        opts += f",msize={size_bytes(nine.get('msize') or '128KiB')}"
        opts += f",cache={nine.get('cache') or ('mmap' if m.writable else 'fscache')}"
    # A missing device must not fail the boot; the host agent reports the mount instead.
    return opts + ",nofail"


def virtfs_option(m: Mount) -> str:
    """The `-virtfs` value of one 9p mount (QEMU's virtio-9p-pci, `local` backend)."""
    nine = dict(m.nine_p)
    value = (f"local,mount_tag={mount_tag(m.location, m.mount_point)}"
             f",path={_esc(m.location)}"
             f",security_model={nine.get('securityModel') or 'none'}")
    if not m.writable:
        value += ",readonly=on"
    return value


def create_host_dirs(spec: InstanceSpec) -> None:
    """Create each mount's host directory when missing (Lima does; QEMU needs it to exist)."""
    for m in spec.mounts:
        os.makedirs(m.location, mode=0o755, exist_ok=True)


def _esc(value: str | Path) -> str:
    """A value inside a QEMU `key=value,...` option: commas are doubled."""
    return str(value).replace(",", ",,")
