"""pvh.unpacked_pvh_kernel on synthetic bzImages: an xz payload whose ELF has (or lacks) the
Xen PHYS32_ENTRY note QEMU's PVH boot needs."""

from __future__ import annotations

import lzma
import struct

import pytest

from lima.drivers.images import pvh

pytestmark = pytest.mark.unit


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def _elf(notes: bytes) -> bytes:
    """A 64-bit ELF with one PT_LOAD and one PT_NOTE program header."""
    phoff, phentsize, phnum = 64, 56, 2
    notes_off = phoff + phentsize * phnum
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, phnum)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0, 0, 0x1000)
    note = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + load + note + notes


def _bzimage(payload: bytes) -> bytes:
    return b"MZ" + b"\0" * 1000 + lzma.compress(payload, format=lzma.FORMAT_XZ) + b"\0" * 64


def test_pvh_kernel_is_unpacked() -> None:
    elf = _elf(_note(b"GNU\0", 3, b"x" * 20) + _note(b"Xen\0", 18, b"\0\0\0\x01"))
    assert pvh.unpacked_pvh_kernel(_bzimage(elf)) == elf


def test_kernel_without_pvh_entry_stays_a_bzimage() -> None:
    # A Xen note of another type (e.g. the guest OS name) is not the PVH entry.
    elf = _elf(_note(b"Xen\0", 6, b"linux\0"))
    assert not pvh.has_pvh_entry(elf)
    assert pvh.unpacked_pvh_kernel(_bzimage(elf)) is None


def test_not_an_xz_bzimage() -> None:
    assert pvh.unpacked_pvh_kernel(b"MZ" + b"\0" * 4096) is None
    assert pvh.unpacked_pvh_kernel(b"MZ\xfd7zXZ\x00 broken stream") is None
    assert not pvh.has_pvh_entry(b"\x7fELF\x01\x01" + b"\0" * 100)  # 32-bit
