"""Compressed images (.gz, .bz2, .xz, .zst) expanded into an instance's basedisk.

Called by `lima.drivers.images.disks` after the cache (or a local path) produced the
file. The cache keeps what the server sent, as Lima does; only the instance gets the
expanded bytes. gzip, bzip2 and xz use the standard library; zstd (not in the
standard library) runs the `zstd` command through the runner. Output is written
sparse: raw disk images are mostly zeros.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from lima.drivers import runner
from lima.drivers.images import progress
from lima.errors import LimaError, PermanentError

log = logging.getLogger(__name__)

EXTENSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
CHUNK = 1 << 20
# Holes are punched per block of this size when it is all zeros.
SPARSE_BLOCK = 64 << 10
_ZEROS = bytes(SPARSE_BLOCK)


def detect(path: Path, name: str = "") -> str | None:
    """The compression of `path`: by the extension of `name` (a URL or file name), else
    by magic bytes; None when the file is not compressed."""
    base = name.split("?", 1)[0].split("#", 1)[0]
    for ext, kind in EXTENSIONS.items():
        if base.endswith(ext):
            return kind
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    return None


def _write_sparse(out: BinaryIO, chunk: memoryview) -> None:
    for off in range(0, len(chunk), SPARSE_BLOCK):
        block = chunk[off:off + SPARSE_BLOCK]
        # tobytes() + bytes == bytes is memcmp; memoryview == bytes compares per item.
        if block.tobytes() == _ZEROS[:len(block)]:
            out.seek(len(block), os.SEEK_CUR)
        else:
            out.write(block)


def _reader(kind: str, raw: BinaryIO) -> io.BufferedIOBase:
    """A decompressing reader over `raw` (the caller closes it)."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")


def decompress(src: Path, dst: Path, kind: str, *, description: str = "") -> None:
    """Expand `src` (compressed with `kind`) into `dst`; PermanentError when corrupt."""
    description = description or src.name
    if kind == "zstd":
        _zstd(src, dst, description)
        return
    total = src.stat().st_size
    bar = progress.start(f"Decompressing ({kind})", description, total)
    ok = False
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with src.open("rb") as raw, _reader(kind, raw) as fin, dst.open("wb") as out:
            last = 0
            while n := fin.readinto(view):
                _write_sparse(out, view[:n])
                pos = raw.tell()  # compressed bytes consumed: what the bar measures
                bar.advance(pos - last)
                last = pos
            out.truncate()  # materialise a trailing hole
        ok = True
    except (OSError, EOFError, lzma.LZMAError) as exc:
        dst.unlink(missing_ok=True)
        raise PermanentError(f"{description}: cannot decompress ({kind}): {exc}") from None
    finally:
        bar.close(ok)


def _zstd(src: Path, dst: Path, description: str) -> None:
    if shutil.which("zstd") is None:
        raise PermanentError(f"{description}: a .zst image needs the `zstd` command "
                             "(Debian: apt-get install zstd)")
    log.info("Decompressing (zstd) %s", description)
    try:
        # --sparse: zstd leaves holes for zero runs (its default only for regular files).
        runner.run(["zstd", "-d", "-q", "-f", "--sparse", "-o", dst, src])
    except LimaError as exc:
        dst.unlink(missing_ok=True)
        raise PermanentError(f"{description}: cannot decompress (zstd): {exc}") from None
