"""The one table of guest architectures: Lima's names, their other spellings, QEMU's.

Everyone who turns an arch word into another imports it from here: the rules (which
archs lima.yaml accepts, which are experimental), the defaults (the host's arch),
template locators (`image_arch`: "arm64" in an image URL means aarch64), the QEMU driver
(`qemu-system-<suffix>`), the accelerator probe and `limactl info`.
Pure: `host_arch()` reads only `platform.machine()`, which cannot change while we run.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # Lima's name, what lima.yaml's `arch` says
    qemu: str  # the suffix of qemu-system-<suffix> (and of $QEMU_SYSTEM_<SUFFIX>)
    aliases: tuple[str, ...]  # Go's and Debian's spellings (uname on macOS says arm64)
    experimental: bool  # Lima warns that these guests are experimental


TABLE = (
    Arch("x86_64", "x86_64", ("amd64",), experimental=False),
    Arch("aarch64", "aarch64", ("arm64",), experimental=False),
    Arch("armv7l", "arm", ("armhf",), experimental=True),
    Arch("ppc64le", "ppc64", ("ppc64el",), experimental=True),
    Arch("riscv64", "riscv64", (), experimental=True),
    Arch("s390x", "s390x", (), experimental=True),
)

ARCHES = tuple(a.name for a in TABLE)
EXPERIMENTAL_ARCHES = tuple(a.name for a in TABLE if a.experimental)
QEMU_ARCH = {a.name: a.qemu for a in TABLE}
# Every word that names an arch (Lima's names and the aliases) -> Lima's name.
WORDS = dict(sorted({w: a.name for a in TABLE for w in (a.name, *a.aliases)}.items()))


def normalize(word: str) -> str:
    """Lima's name for an arch word ("amd64" -> "x86_64"); unknown words as they are."""
    return WORDS.get(word.lower(), word)


def host_arch() -> str:
    """The host's arch in Lima's spelling."""
    return normalize(platform.machine())
