"""lima.drivers.screenshot's PPM -> PNG/BMP conversions (pure): the pixels survive, in each
format's own order and padding."""

from __future__ import annotations

import struct
import zlib

import pytest

from lima.drivers.screenshot import parse_ppm, ppm_to_bmp, ppm_to_png
from lima.errors import LimaError

# 3x2: red green blue / white black grey, with a comment in the header as PPM allows
PIXELS = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 128, 128, 128])
PPM = b"P6\n# qemu\n3 2\n255\n" + PIXELS


def test_parse_ppm() -> None:
    assert parse_ppm(PPM) == (3, 2, PIXELS)
    with pytest.raises(LimaError, match="truncated PPM pixels"):
        parse_ppm(PPM[:-1])
    with pytest.raises(LimaError, match="not a P6/255 PPM"):
        parse_ppm(b"P3\n1 1\n255\n0 0 0")


def png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    return chunks


def test_png_keeps_the_pixels() -> None:
    chunks = png_chunks(ppm_to_png(PPM))
    assert struct.unpack(">IIBBBBB", chunks[b"IHDR"]) == (3, 2, 8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert raw == b"\x00" + PIXELS[:9] + b"\x00" + PIXELS[9:]
    assert chunks[b"IEND"] == b""


def test_bmp_is_bottom_up_bgr_padded() -> None:
    bmp = ppm_to_bmp(PPM)
    magic, size, _, _, offset = struct.unpack("<2sIHHI", bmp[:14])
    assert (magic, size, offset) == (b"BM", len(bmp), 54)
    assert struct.unpack("<IiiHH", bmp[14:30]) == (40, 3, 2, 1, 24)
    rows = bmp[54:]
    assert len(rows) == 2 * 12  # 9 bytes a row, padded to 12
    assert rows[:12] == bytes([255, 255, 255, 0, 0, 0, 128, 128, 128]) + b"\0\0\0"
    assert rows[12:] == bytes([0, 0, 255, 0, 255, 0, 255, 0, 0]) + b"\0\0\0"
