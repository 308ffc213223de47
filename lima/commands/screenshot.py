"""`limactl screenshot INSTANCE [-o FILE]`: the running guest's screen as PNG or BMP.

Lima's flags, default file name (INSTANCE-screenshot.png), extension rule and messages.
Lima 2.2 takes screenshots only with its vz driver (QEMU answers "driver does not support
screenshots"); limapy takes them from QEMU over QMP (lima.drivers.screenshot). A guest with
`video.display: none` has no graphics device, and is refused with Lima's no-display words.
cli.py registers the verb.
"""

from __future__ import annotations

import logging
import os

import click

from lima.errors import LimaError

log = logging.getLogger(__name__)

NO_DISPLAY = ("screenshot failed: VM has no display configured — set video.display "
              "(e.g., \"default\") in the instance config")


def go_quote(text: str) -> str:
    """Go's %q of a plain string (what Lima's messages print)."""
    import json

    return json.dumps(text, ensure_ascii=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", default="",
              help="Output path; extension must be .png or .bmp (default: "
                   "INSTANCE-screenshot.png)")
@click.argument("instance")
def screenshot(output: str, instance: str) -> None:
    """Capture a screenshot of the VM display"""
    from lima.drivers import store
    from lima.drivers.screenshot import NoDisplayError, screendump
    from lima.schemas import load_instance

    inst_dir = store.require_instance(instance)
    status = store.inspect_processes(instance, inst_dir).status
    if status != store.STATUS_RUNNING:
        raise LimaError(f"instance {go_quote(instance)} is not running (status: {status})")
    path = output or f"{instance}-screenshot.png"
    ext = os.path.splitext(path)[1]
    fmt = {".png": "png", ".bmp": "bmp"}.get(ext.lower())
    if fmt is None:
        raise LimaError(f"unsupported output extension {go_quote(ext)}: must be .png or .bmp")
    spec = load_instance(instance).spec
    if (spec.video_display or "none") == "none":
        raise LimaError(NO_DISPLAY)
    try:
        data = screendump(inst_dir, fmt)
    except NoDisplayError:
        raise LimaError(NO_DISPLAY) from None
    except LimaError as exc:
        raise LimaError(f"screenshot failed: {exc}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise LimaError(f"failed to write {go_quote(path)}: {exc}") from None
    log.info("Screenshot saved to %s (%d bytes)", go_quote(path), len(data))
