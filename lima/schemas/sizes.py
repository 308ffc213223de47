"""Size strings as Lima reads them ("4GiB", "4G", "2.5GiB", "100GiB", plain byte counts).

Lima parses `memory`, `disk`, `9p.msize`, ... with go-units' RAMInBytes: every unit is
binary (k = 1024), the `i` and the `B` are optional, a space may separate number and unit,
and the value is truncated to whole bytes. `validate` checks sizes with `parse_size`;
`build.build_spec` turns them into the byte counts of InstanceSpec.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_NAMES = (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
          ("KiB", 1 << 10))


def parse_size(value: str | int) -> int:
    """Bytes in `value`; raise ValueError (with a message fit for the user) if invalid."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size: {value} is negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid size: {value!r} is not a string")
    m = _SIZE.match(value.strip())
    if m is None:
        raise ValueError(f'invalid size: "{value}" (expected e.g. "4GiB", "512MiB", "2.5GiB")')
    number: str = m.group(1)
    unit: str | None = m.group(2)
    mul: int = _UNITS[unit.lower()] if unit else 1
    if "." in number:
        whole, frac = number.split(".")
        # Exact arithmetic (no float rounding), truncated to whole bytes like go-units.
        scale = int("1" + "0" * len(frac))
        return int(whole) * mul + int(frac) * mul // scale
    return int(number) * mul


def format_size(n: int) -> str:
    """The shortest exact Lima-style size string: 4294967296 -> "4GiB", 2.5 GiB -> "2.5GiB"."""
    if n < 0:
        raise ValueError(f"negative size {n}")
    for name, unit in _NAMES:
        if n < unit:
            continue
        if n % unit == 0:
            return f"{n // unit}{name}"
        for digits in (1, 2, 3):  # a short decimal, only when exact so parse_size round-trips
            scaled = n * 10**digits
            if scaled % unit == 0:
                return f"{scaled // unit / 10**digits:.{digits}f}{name}"
    return f"{n}B"
