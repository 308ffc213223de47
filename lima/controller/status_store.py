"""status.json in the instance directory: read tolerantly, written atomically.

`lima.controller.reconcile` loads it at the start of a pass and saves it at the end; `limactl
list` reads it. A missing or corrupt file is not an error: the reconciler rebuilds the phase
from facts, so `load()` then returns None. Writes go to a temp file in the same directory,
are fsync'd, then renamed over the old file, so a reader sees the old or the new status,
never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from lima import paths
from lima.states.model import Status

log = logging.getLogger(__name__)


class StatusStore:
    """One status.json per instance under `home` (default: $LIMA_HOME, read at each call)."""

    def __init__(self, home: Path | None = None) -> None:
        self._home = home

    def path(self, name: str) -> Path:
        home = self._home if self._home is not None else paths.lima_home()
        return home / name / paths.STATUS_JSON

    def load(self, name: str) -> Status | None:
        p = self.path(name)
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("%s: cannot read (%s); rebuilding the status from facts", p, e)
            return None
        try:
            return Status.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s: unusable (%s); rebuilding the status from facts", p, e)
            return None

    def save(self, name: str, status: Status) -> bool:
        """Write atomically; False (nothing written) when the instance has no directory.

        The store never creates an instance directory: a failed create must leave nothing
        behind (its reason reaches the user through the verb's error), and a delete must
        not be resurrected.
        """
        p = self.path(name)
        if not p.parent.is_dir():
            return False
        data = json.dumps(status.to_json(), indent=2, sort_keys=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".status.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(p.parent)
        return True


def _fsync_dir(d: Path) -> None:
    # Makes the rename itself durable; harmless where directories cannot be opened.
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
