"""A screenshot of a running guest's display: QMP `screendump`, as PNG or BMP bytes.

Called by `limactl screenshot` (lima.commands.screenshot). QEMU writes the dump itself, to
a file named in the command: here a private temporary directory, read back and removed.
PNG comes from QEMU when it can write PNG (7.1+ built with libpng, as Debian 12's 7.2 is);
otherwise, and always for BMP (QEMU has no BMP), QEMU writes PPM and `ppm_to_png` /
`ppm_to_bmp` (pure) convert it.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from pathlib import Path

from lima import paths
from lima.errors import LimaError

FORMATS = ("png", "bmp")
QMP_TIMEOUT = 30.0  # a large framebuffer under TCG takes a while to encode
# QEMU's words when the guest has no graphics device at all.
_NO_CONSOLE = "no console"


class NoDisplayError(LimaError):
    """The VM has no display to take a screenshot of."""


def screendump(inst_dir: Path, fmt: str) -> bytes:
    """The guest's screen as `fmt` ("png" or "bmp"); LimaError when QEMU cannot dump it."""
    from lima.drivers.qmp import QMPClient, QMPError

    if fmt not in FORMATS:
        raise LimaError(f"unsupported format {fmt!r}: must be png or bmp")
    tmp = Path(tempfile.mkdtemp(prefix="lima-screenshot-"))  # 0700: the screen is private
    try:
        with QMPClient(inst_dir / paths.QMP_SOCK, timeout=QMP_TIMEOUT) as qmp:
            if fmt == "png":
                target = tmp / "screen.png"
                try:
                    qmp.execute("screendump", {"filename": str(target), "format": "png"})
                    return target.read_bytes()
                except QMPError as exc:
                    if _NO_CONSOLE in exc.desc.lower():
                        raise NoDisplayError(exc.desc) from None
                    # An older QEMU, or one without libpng: PPM, converted here.
            ppm = tmp / "screen.ppm"
            try:
                qmp.execute("screendump", {"filename": str(ppm)})
            except QMPError as exc:
                if _NO_CONSOLE in exc.desc.lower():
                    raise NoDisplayError(exc.desc) from None
                raise LimaError(f"QEMU could not take a screendump: {exc.desc}") from None
        data = ppm.read_bytes()
    except OSError as exc:
        raise LimaError(f"cannot read the screendump QEMU wrote: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ppm_to_png(data) if fmt == "png" else ppm_to_bmp(data)


def parse_ppm(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGB rows top-down) of a binary PPM (P6, maxval 255) as QEMU writes."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            end = data.find(b"\n", pos)
            pos = len(data) if end < 0 else end + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise LimaError("screendump: truncated PPM header")
        fields.append(data[start:pos])
    pos += 1  # the one whitespace byte before the pixels
    if fields[0] != b"P6" or fields[3] != b"255":
        raise LimaError(f"screendump: not a P6/255 PPM ({fields[0]!r}, {fields[3]!r})")
    width, height = int(fields[1]), int(fields[2])
    pixels = data[pos:pos + width * height * 3]
    if len(pixels) != width * height * 3:
        raise LimaError("screendump: truncated PPM pixels")
    return width, height, pixels


def ppm_to_png(data: bytes) -> bytes:
    """A PNG (8-bit RGB, no filter) of the PPM."""
    width, height, pixels = parse_ppm(data)
    stride = width * 3
    raw = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def ppm_to_bmp(data: bytes) -> bytes:
    """A BMP (24-bit BGR, rows bottom-up, each padded to 4 bytes) of the PPM."""
    width, height, pixels = parse_ppm(data)
    stride = width * 3
    pad = b"\x00" * ((4 - stride % 4) % 4)
    rows = []
    for y in range(height - 1, -1, -1):
        row = bytearray(pixels[y * stride:(y + 1) * stride])
        row[0::3], row[2::3] = row[2::3], row[0::3]  # RGB -> BGR
        rows.append(bytes(row) + pad)
    body = b"".join(rows)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(body), 2835, 2835,
                       0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(body), 0, 0, 14 + len(info))
    return header + info + body
