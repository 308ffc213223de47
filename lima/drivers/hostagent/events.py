"""ha.stdout.log: the host agent's events in Lima's shape, and reading the agent's logs.

The daemon (lima.drivers.hostagent.daemon) appends one JSON event per line; the driver
reads them back when the agent cannot be asked (lima.drivers.instance.events_progress),
and failure messages quote the tails of the logs (`tail_lines`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lima import paths

QEMU_STDOUT = "qemu.stdout.log"
QEMU_STDERR = "qemu.stderr.log"

log = logging.getLogger(__name__)

# --- events -------------------------------------------------------------------------------

def make_event(
    *,
    ssh_port: int,
    running: bool = False,
    degraded: bool = False,
    exiting: bool = False,
    errors: Sequence[str] = (),
    phase: str | None = None,
) -> dict[str, Any]:
    """One event in Lima's shape (every field present, so readers need no defaults).

    `phase` (ours, ignored by Lima's readers) marks progress while booting: "ssh_ready",
    then "provisioned".
    """
    status: dict[str, Any] = {
        "running": running,
        "degraded": degraded,
        "exiting": exiting,
        "errors": list(errors),
        "sshLocalPort": ssh_port,
    }
    if phase is not None:
        status["phase"] = phase
    return {"time": datetime.now().astimezone().isoformat(), "status": status}


def append_event(inst_dir: Path, event: dict[str, Any]) -> None:
    """Append one JSON line to ha.stdout.log with a single O_APPEND write."""
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    fd = os.open(inst_dir / paths.HA_STDOUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(inst_dir: Path) -> list[dict[str, Any]]:
    """Every event in ha.stdout.log, oldest first; torn or foreign lines are skipped."""
    try:
        text = (inst_dir / paths.HA_STDOUT).read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and isinstance(event.get("status"), dict):
                events.append(event)
    return events


def tail_lines(path: Path, n: int = 10) -> str:
    """The last `n` lines of a log file ("" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""

