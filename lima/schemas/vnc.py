"""`video.vnc.display` parsed: where QEMU's VNC server of `video.display: vnc` listens. Pure.

Lima hands the value to QEMU as `-display vnc=VALUE,password=on` ("HOST:D[,to=L]": display
D is TCP port 5900+D; `to=L` lets QEMU take the first free display from D to L). limapy
takes the same form but binds only to 127.0.0.1 and knows no other VNC option, so that the
guest's screen is never reachable from another machine. The semantic rule
(lima.schemas.rules.experimental) reports `vnc_display_problem()`; the QEMU argv builder
and the host agent (lima.drivers.display) use `parse_vnc_display()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VNC_HOST = "127.0.0.1"
VNC_BASE_PORT = 5900
DEFAULT_VNC_DISPLAY = "127.0.0.1:0,to=9"  # Lima's default
_MAX_DISPLAY = 65535 - VNC_BASE_PORT
_FORM = re.compile(r"^(?P<host>[^,]*):(?P<num>[0-9]+)(?:,to=(?P<to>[0-9]+))?$")


@dataclass(frozen=True)
class VncDisplay:
    """HOST:NUMBER[,to=LAST]: QEMU listens on the first free port 5900+NUMBER..5900+LAST."""

    host: str
    number: int
    last: int | None = None

    @property
    def port(self) -> int:
        return VNC_BASE_PORT + self.number

    def qemu_value(self) -> str:
        """What follows `vnc=` in QEMU's -display option (without the password)."""
        to = f",to={self.last}" if self.last is not None else ""
        return f"{self.host}:{self.number}{to}"


def vnc_display_problem(value: str) -> str | None:
    """Why `value` is not a `video.vnc.display` limapy serves; None when it is one."""
    text = value.strip() or DEFAULT_VNC_DISPLAY
    match = _FORM.match(text)
    if match is None:
        return (f'"{value}" is not supported: limapy takes "{VNC_HOST}:D" or '
                f'"{VNC_HOST}:D,to=L" (display D is TCP port {VNC_BASE_PORT}+D; no other '
                "QEMU VNC option)")
    if match["host"] != VNC_HOST:
        return (f'host "{match["host"]}" is not supported: limapy serves VNC on '
                f"{VNC_HOST} only (reach it from elsewhere through an ssh tunnel)")
    number = int(match["num"])
    last = int(match["to"]) if match["to"] is not None else None
    if number > _MAX_DISPLAY or (last is not None and last > _MAX_DISPLAY):
        return f"display numbers must be at most {_MAX_DISPLAY} (port 65535)"
    if last is not None and last < number:
        return f"to={last} is less than the display number {number}"
    return None


def parse_vnc_display(value: str) -> VncDisplay:
    """The display of a value `vnc_display_problem` accepts; ValueError otherwise."""
    problem = vnc_display_problem(value)
    if problem is not None:
        raise ValueError(f"video.vnc.display: {problem}")
    match = _FORM.match(value.strip() or DEFAULT_VNC_DISPLAY)
    assert match is not None
    last = int(match["to"]) if match["to"] is not None else None
    return VncDisplay(match["host"], int(match["num"]), last)
