"""basedisk.json: the sha256 and size of the basedisk an instance's diffdisk was laid over.

`disks.prepare_disks` writes it (`record_basedisk`) once basedisk is in place and before
diffdisk is made, so every diffdisk has one. `lima.drivers.images.repair` reads it when
basedisk has gone missing: a fresh copy of the image may take basedisk's place only when
it has exactly these bytes, since diffdisk stores only the blocks the guest changed and
reads every other block from basedisk.

Hashing costs about 1 s per GiB of image (sha256 with the CPU's SHA extensions), once,
at create; the record is what makes a lost basedisk repairable instead of fatal. A copy
of a built image takes the digest its build cache just checked instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.drivers.store import atomic_write

RECORD_VERSION = 1


@dataclass(frozen=True)
class BaseRecord:
    """What identifies a basedisk's bytes."""

    sha256: str
    size: int

    def short(self) -> str:
        return f"sha256 {self.sha256[:16]}…, {self.size} bytes"


def digest_file(path: Path) -> BaseRecord:
    """sha256 and size of `path`'s bytes (holes read as zeros, as qemu reads them)."""
    with path.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
        size = f.tell()
    return BaseRecord(sha, size)


def record_basedisk(inst_dir: Path, *, known_sha256: str | None = None) -> BaseRecord:
    """Write basedisk.json for `inst_dir`'s basedisk (atomically) and return the record.
    `known_sha256`: the basedisk is a copy of bytes just checked to have this digest (a
    built image's), so it is not hashed again."""
    base = inst_dir / paths.BASEDISK
    if known_sha256 is not None:
        rec = BaseRecord(known_sha256, base.stat().st_size)
    else:
        rec = digest_file(base)
    data = {"version": RECORD_VERSION, "sha256": rec.sha256, "size": rec.size}
    atomic_write(inst_dir / paths.BASEDISK_RECORD, json.dumps(data) + "\n")
    return rec


def read_record(inst_dir: Path) -> BaseRecord | None:
    """The recorded basedisk, or None when there is no usable record (an instance made by
    Lima or an older limapy, or a damaged file)."""
    try:
        data = json.loads((inst_dir / paths.BASEDISK_RECORD).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return None
    sha, size = data.get("sha256"), data.get("size")
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int):
        return None
    return BaseRecord(sha, size)
