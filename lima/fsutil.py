"""Whole-file writes that a reader sees either before or after, never half done.

Sits at the level of `lima.paths` and `lima.errors` (it imports nothing of limapy), so
every layer that writes files may use it: the instance store (lima.yaml, lima-version),
status.json, the ssh identity, ssh.config and the ansible inventory, cidata.iso and
cloud-config.yaml, the accel cache, the host agent's pid file, the image cache and the
image builder. It is the one place that calls `os.replace` on a file written from memory
(tests/unit/test_facts_once.py checks that).

The temp file is `.NAME.PID.XXXXXXXX` beside the target: the PID lets
`lima.drivers.store.remove_leftovers` tell a killed writer's temp from a live one's, and
`lima.paths.is_known_instance_entry` knows the `.NAME.` prefix. mkstemp creates it with
O_EXCL and mode 0600, so a symlink planted at the temp name is never followed and a
private key is never readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: int = 0o644, sync: bool = True, sync_dir: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces `path` with mode `mode` exactly
    (not filtered by the umask). On an exception the temp is removed and `path` is left
    as it was.

    `sync` fsyncs the data before the rename (off only for caches that may be lost);
    `sync_dir` also fsyncs the directory, so the rename itself survives a power loss
    (status.json, which the reconciler trusts after a crash).
    """
    import tempfile  # here: read-only verbs (`limactl list`) import this module, never write

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write(
    path: Path, data: str | bytes, *, mode: int = 0o644, sync: bool = True,
    sync_dir: bool = False,
) -> None:
    """Replace `path` with `data` (str is written as UTF-8); see `atomic_writer`."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_writer(path, mode=mode, sync=sync, sync_dir=sync_dir) as fh:
        fh.write(raw)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; file systems that cannot fsync a directory
    (some network ones) are ignored: the data itself is already synced."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def file_stamp(path: Path) -> list[int]:
    """What any write changes: device, inode, size, mtime and ctime (ns). OSError when
    `path` cannot be stat'ed."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
