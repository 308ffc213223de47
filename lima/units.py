"""Printing byte counts as Lima does (go-units' BytesSize), with no imports so that any
layer may use it: the schemas' builtin memory default, `limactl disk`, `limactl list`."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def bytes_size(n: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits ("4GiB", "11.72GiB")."""
    value = float(n)
    i = 0
    while value >= 1024 and i < len(_UNITS) - 1:
        value /= 1024
        i += 1
    return f"{value:.4g}{_UNITS[i]}"
