"""Go durations (`10m`, `1h30m`, `1.5h`, `90s`, `0`) as Lima's `--timeout` flags take them.

`parse_duration` follows Go's time.ParseDuration, errors included (`time: invalid duration
"x"`); a bare number (`90`, `1.5`) is a limapy extension meaning seconds, as limapy's
--timeout took before. `DURATION` is the click type the verbs with --timeout use
(lima.commands.lifecycle: start, apply, stop); its error names the flag as pflag does.
Pure: no I/O.
"""

from __future__ import annotations

import re

import click

from lima.errors import LimaError
from lima.goparse import quote as _quote

# Seconds per unit, as Go's time package spells them (two spellings of micro).
_UNITS: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
    "s": 1.0, "m": 60.0, "h": 3600.0,
}
_BARE_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
# The largest Go duration: 2^63-1 nanoseconds.
_MAX_SECONDS = (2**63 - 1) / 1e9


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds. Raises ValueError with Go's message."""
    orig, s = text, text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {_quote(orig)}")
    total = 0.0
    while s:
        m = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        assert m is not None  # the pattern matches the empty string
        whole, frac = m.group(1), m.group(3)
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        s = s[m.end():]
        u = re.match(r"[^0-9.]*", s)
        unit = u.group() if u else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_quote(unit)} in duration {_quote(orig)}")
        s = s[len(unit):]
        total += float(f"{whole or '0'}.{frac or '0'}") * _UNITS[unit]
        if total > _MAX_SECONDS:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
    return -total if neg else total


def parse_duration(text: str) -> float:
    """A Go duration, or a bare number of seconds (limapy's extension), in seconds."""
    if _BARE_SECONDS.fullmatch(text.strip()):
        return float(text.strip())
    return parse_go_duration(text)


def format_duration(seconds: float) -> str:
    """Go's Duration.String() for whole and fractional seconds (`10m0s`, `1h30m0s`, `1.5s`)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{secs:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{secs_text}s"
    if minutes:
        return f"{sign}{int(minutes)}m{secs_text}s"
    return f"{sign}{secs_text}s"


class Duration(click.ParamType[float]):
    """A --timeout value: a Go duration or a bare number of seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        flag = "--timeout"
        if param is not None:  # as typed (`--suspend-idle`), not the Python name
            flag = next((o for o in param.opts if o.startswith("--")), f"--{param.name}")
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            # pflag's wording; a LimaError, so the exit code is Lima's 1, not click's 2.
            raise LimaError(f"invalid argument {_quote(str(value))} for {_quote(flag)} flag: "
                            f"{exc}") from None


DURATION = Duration()
