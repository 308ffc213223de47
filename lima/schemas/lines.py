"""Line marks for problems: which file and line a field of a (merged) document came from.

`templates.load_document()` builds a LineMap while merging bases (each path keeps the file
it came from); `validate.check()` looks paths up with `line_of()` to print
`FILE:LINE: field.path: message`.
"""

from __future__ import annotations

Path = tuple[str | int, ...]
LineMap = dict[Path, tuple[str, int]]


def line_of(lines: LineMap, path: Path, source: str) -> tuple[str, int]:
    """(file, line) of `path`, else of its nearest recorded parent, else (source, 0)."""
    p = tuple(path)
    while True:
        hit = lines.get(p)
        if hit is not None:
            return hit
        if not p:
            return (source, 0)
        p = p[:-1]


def format_path(path: Path) -> str:
    """("portForwards", 0, "guestPort") -> "portForwards[0].guestPort"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def from_loaded(lines: dict[Path, int], filename: str) -> LineMap:
    """A LineMap for one file from `Loaded.lines`."""
    return {p: (filename, ln) for p, ln in lines.items()}
