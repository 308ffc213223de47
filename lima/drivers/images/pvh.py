"""A kernel QEMU can start without decompressing it: the ELF inside a bzImage, via PVH.

Called by the image recipes (build_debian, build_tiny) on the bzImage of the Debian kernel
they fetched. A bzImage decompresses itself before the kernel's first line: Debian's
kernels are xz-compressed, which under TCG took 5.5 s here for linux-image-amd64 (8 MB
bzImage, 66 MB vmlinux) before the kernel printed anything. QEMU's `-kernel` also boots a
plain vmlinux ELF through its PVH entry point (a Xen ELF note, XEN_ELFNOTE_PHYS32_ENTRY,
that Debian's kernels have), with the same -initrd and -append, and skips that step.
`unpacked_pvh_kernel` returns that ELF, or None when the bzImage holds no xz payload or its
ELF has no PVH entry (then the recipe keeps the bzImage).
"""

from __future__ import annotations

import lzma
import struct

_XZ_MAGIC = b"\xfd7zXZ\x00"
_ELF64 = b"\x7fELF\x02\x01"
_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def unpacked_pvh_kernel(bzimage: bytes) -> bytes | None:
    """The vmlinux ELF in `bzimage` if it can boot through PVH, else None."""
    start = bzimage.find(_XZ_MAGIC)
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    except lzma.LZMAError:
        return None
    return elf if has_pvh_entry(elf) else None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF has a Xen PHYS32_ENTRY note (PVH boot)."""
    if not elf.startswith(_ELF64) or len(elf) < 64:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            return False
        p_type, = struct.unpack_from("<I", elf, base)
        if p_type != _PT_NOTE:
            continue
        offset, = struct.unpack_from("<Q", elf, base + 8)
        size, = struct.unpack_from("<Q", elf, base + 32)
        if _notes_have_pvh(elf[offset:offset + size]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12:pos + 12 + namesz]
        if name == b"Xen\x00" and kind == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + _align4(namesz) + _align4(descsz)
    return False


def _align4(n: int) -> int:
    return (n + 3) & ~3
