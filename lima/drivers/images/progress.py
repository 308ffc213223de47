"""Progress of one transfer (download, copy, decompression) as the user sees it.

Called by `lima.drivers.images.download` and `.disks` once per chunk. On a terminal
stderr gets a live bar (bytes, rate, ETA) drawn by rich; otherwise (logs, CI, the
hostagent) plain log lines at most every few seconds, so files stay readable.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Protocol

log = logging.getLogger(__name__)

# Seconds between two plain log lines when stderr is not a terminal.
LOG_INTERVAL = 5.0


class Progress(Protocol):
    def advance(self, n: int) -> None: ...

    def close(self, ok: bool) -> None: ...


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - loop always returns


class LogProgress:
    """Plain log lines: a start line, one every LOG_INTERVAL seconds, an end line."""

    def __init__(self, verb: str, description: str, total: int | None) -> None:
        self.verb = verb
        self.description = description
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.last = self.start
        size = f" ({human_bytes(total)})" if total else ""
        log.info("%s %s%s", verb, description, size)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL:
            self.last = now
            log.info("%s %s: %s", self.verb, self.description, self._figures(now))

    def _figures(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        text = human_bytes(self.done)
        if self.total:
            text += f" / {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f", {human_bytes(rate)}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / rate:.0f} s"
        return text

    def close(self, ok: bool) -> None:
        if ok:
            now = time.monotonic()
            log.info("%s %s: done, %s in %.1f s", self.verb, self.description,
                     self._figures(now), now - self.start)


class BarProgress:
    """A rich progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, verb: str, description: str, total: int | None, stream: IO[str]) -> None:
        # Imported here: rich costs ~50 ms to import, and only terminals need it.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(f"{verb} {description}", total=total)

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def close(self, ok: bool) -> None:
        self._bar.stop()


def start(verb: str, description: str, total: int | None, *,
          stream: IO[str] | None = None) -> Progress:
    """A progress display for one transfer: a bar on a terminal, log lines otherwise."""
    out = stream if stream is not None else sys.stderr
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return BarProgress(verb, description, total, out)
    return LogProgress(verb, description, total)
