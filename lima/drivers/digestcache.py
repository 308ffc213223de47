"""sha256 of files hashed at every boot, kept under each file's identity.

A boot that can pause keys its template on the instance's kernel and initrd bytes
(lima.drivers.boottemplate.plan): hashing the 65 MB kernel took the host agent 0.2 s
before qemu started, at every such boot. Here the digest is kept in a small JSON file
(`digests.json` in the boot template cache) under the file's path and identity: device,
inode, size, and modification and change times in ns. A file written, replaced or
touched since has another identity and is hashed again. A lost, damaged or unwritable
cache costs a hash, never a wrong digest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lima.fsutil import atomic_write, file_stamp

CACHE_FILE = "digests.json"


def identity(path: Path) -> list[int] | None:
    """`lima.fsutil.file_stamp`, None when the file is gone."""
    try:
        return file_stamp(path)
    except OSError:
        return None


def sha256(path: Path, cache_dir: Path) -> str:
    """The sha256 of `path`'s bytes, from the cache in `cache_dir` when the file is the one
    hashed before. Raises OSError when `path` cannot be read."""
    key = os.path.abspath(path)
    before = identity(path)
    entries = _load(cache_dir / CACHE_FILE)
    hit = entries.get(key)
    if before is not None and isinstance(hit, dict) and hit.get("identity") == before:
        digest = hit.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    # Here, not at the top: lima.drivers.images costs the modules that import
    # boottemplate (the driver, qemu's argv) 0.1 s when it is not needed.
    from lima.drivers.images.baserecord import digest_file

    digest = digest_file(path).sha256
    if before is None or identity(path) != before:
        return digest  # changed while it was read: not kept
    # Entries of files gone or changed since are dropped on the way.
    kept = {k: v for k, v in entries.items()
            if isinstance(v, dict) and identity(Path(k)) == v.get("identity")}
    kept[key] = {"identity": before, "sha256": digest}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_dir / CACHE_FILE, json.dumps(kept, sort_keys=True),
                     mode=0o600, sync=False)
    except OSError:
        pass  # a cache that cannot be written only costs the next boot a hash
    return digest


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
