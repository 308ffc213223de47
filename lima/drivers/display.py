"""The guest's screen: QEMU's -display and video devices, and `video.display: vnc` at run time.

`display_args(spec, add)` is called by the QEMU argv builder (lima.drivers.qemu); it is pure.
With `video.display: vnc` QEMU's own VNC server listens on `video.vnc.display`
(lima.schemas.vnc: 127.0.0.1 only) with `password=on`, which refuses every client until a
password is set. The host agent (lima.commands.hostagent) calls `setup_vnc()` once qemu
runs, as Lima's host agent does: a random password set over QMP `change-vnc-password` and
written to `vncpassword` (0600), the display QEMU took (`query-vnc`) written to `vncdisplay`
(0600). `remove_vnc_files()` runs when qemu is gone (host agent exit, `limactl stop`), as in
Lima. `vnc_summary()` gives the lines `limactl start` prints.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.errors import LimaError, PermanentError
from lima.fsutil import atomic_write
from lima.schemas.spec import InstanceSpec
from lima.schemas.vnc import VNC_BASE_PORT, parse_vnc_display

log = logging.getLogger(__name__)

VNC_DISPLAY_FILE = paths.VNC_DISPLAY
VNC_PASSWORD_FILE = paths.VNC_PASSWORD
PASSWORD_LENGTH = 8  # Lima's; the VNC protocol's DES authentication uses 8 characters
_PASSWORD_DIGITS = PASSWORD_LENGTH // 4
QMP_WAIT = 30.0  # Lima waits as long for qmp.sock before setting the password


def uses_vnc(spec: InstanceSpec) -> bool:
    return spec.video_display == "vnc"


def hostagent_args(spec: InstanceSpec) -> tuple[str, ...]:
    """The host agent's `--vnc DISPLAY` when it must set up the VNC display."""
    return ("--vnc", spec.video_vnc_display) if uses_vnc(spec) else ()


def display_args(spec: InstanceSpec, add: Callable[[str, str], None]) -> list[str]:
    """`-display` (through `add`, which keeps one set in $QEMU_SYSTEM_*) and the devices.

    The devices are Lima's: virtio-vga (x86_64, riscv64) or virtio-gpu, a virtio keyboard,
    and a virtio tablet for VNC (absolute pointer: no second cursor) or a mouse otherwise.
    """
    display = spec.video_display or "none"
    pointer = "mouse"
    if display == "vnc":
        try:
            vnc = parse_vnc_display(spec.video_vnc_display)
        except ValueError as exc:  # validation refuses it first; a spec built by hand
            raise PermanentError(str(exc)) from exc
        display = f"vnc={vnc.qemu_value()},password=on"
        pointer = "tablet"
    add("-display", display)
    if display == "none":
        return []
    gpu = "virtio-vga" if spec.arch in ("x86_64", "riscv64") else "virtio-gpu"
    return ["-device", gpu, "-device", "virtio-keyboard-pci",
            "-device", f"virtio-{pointer}-pci"]  # fmt: skip


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """Letters and digits only (easy to copy), `length // 4` of them digits, no character
    twice: the shape of the password Lima's host agent makes."""
    digits = secrets.SystemRandom().sample(string.digits, length // 4)
    letters = secrets.SystemRandom().sample(string.ascii_letters, length - len(digits))
    chars = digits + letters
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


@dataclass(frozen=True)
class VncInfo:
    """What `setup_vnc` set up: `display` as written to vncdisplay ("127.0.0.1:0")."""

    display: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"vnc://{self.host}:{self.port}"


def setup_vnc(inst_dir: Path, vnc_display: str, *, wait: float = QMP_WAIT) -> VncInfo:
    """Set a new random VNC password in the running qemu and write vncpassword and
    vncdisplay; `vnc_display` is video.vnc.display. LimaError when QMP does not answer in
    `wait` seconds or QEMU has no VNC server (e.g. -display set through $QEMU_SYSTEM_*)."""
    from lima.drivers.qmp import QMPClient, QMPError, QMPUnavailable

    try:
        wanted = parse_vnc_display(vnc_display)
    except ValueError as exc:
        raise LimaError(str(exc)) from exc
    password = generate_password()
    deadline = time.monotonic() + wait
    while True:
        try:
            with QMPClient(inst_dir / paths.QMP_SOCK, timeout=5.0) as qmp:
                qmp.execute("change-vnc-password", {"password": password})
                info = qmp.execute("query-vnc")
            break
        except QMPError as exc:
            raise LimaError(f"QEMU refused the VNC password: {exc}") from exc
        except QMPUnavailable as exc:
            if time.monotonic() >= deadline:
                raise LimaError(f"cannot set the VNC password: {exc}") from exc
            time.sleep(0.1)
    if not isinstance(info, dict) or not info.get("enabled"):
        raise LimaError("QEMU serves no VNC display (is -display set in $QEMU_SYSTEM_*?)")
    try:
        port = int(str(info.get("service")))
    except ValueError:
        port = wanted.port
    atomic_write(inst_dir / VNC_PASSWORD_FILE, password, mode=0o600)
    vnc = VncInfo(f"{wanted.host}:{port - VNC_BASE_PORT}", wanted.host, port)
    display_file = inst_dir / VNC_DISPLAY_FILE
    atomic_write(display_file, vnc.display, mode=0o600)
    for line in vnc_summary(inst_dir, vnc):
        log.info("%s", line)
    return vnc


def vnc_summary(inst_dir: Path, vnc: VncInfo | None = None) -> list[str]:
    """Lima's lines about the VNC server ("VNC server running at ..."); none when the
    instance has no vncdisplay file (no VNC, or not running)."""
    display_file = inst_dir / VNC_DISPLAY_FILE
    if vnc is None:
        try:
            display = display_file.read_text(encoding="utf-8").strip()
            host, _, number = display.rpartition(":")
            vnc = VncInfo(display, host, VNC_BASE_PORT + int(number))
        except (OSError, ValueError):
            return []
    return [f"VNC server running at {vnc.display} <{vnc.url}>",
            f"VNC Display: `{display_file}`",
            f"VNC Password: `{inst_dir / VNC_PASSWORD_FILE}`"]


def remove_vnc_files(inst_dir: Path) -> None:
    """vncdisplay and vncpassword: gone once qemu is (Lima removes them then, too)."""
    for name in (VNC_DISPLAY_FILE, VNC_PASSWORD_FILE):
        (inst_dir / name).unlink(missing_ok=True)
