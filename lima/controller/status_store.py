"""status.json in the instance directory: read tolerantly, written atomically.

`lima.controller.reconcile` loads it at the start of a pass and saves it at the end; `limactl
list` reads it. A missing or corrupt file is not an error: the reconciler rebuilds the phase
from facts, so `load()` then returns None (after one warning when the file was there but
unusable: garbage, not UTF-8, a directory, unreadable). Writes go to a temp file in the same
directory, are fsync'd, then renamed over the old file, so a reader sees the old or the new
status, never half of one. A write the OS refuses (disk full, read-only or foreign-owned
LIMA_HOME) is a `StatusWriteError` naming the file and the OS's reason, never a bare OSError.

An instance without a directory (a create that failed under the folder controller) has
its status kept under `$LIMA_HOME/_controller/NAME.status.json` instead, when the store is
made with `dirless=True` (the controller's): its backoff and Stalled condition survive a
controller restart. The first save into a real instance directory removes that file.

One key is not the reconciler's: `managedBy` ("controller:DIR"), set by the folder
controller (lima.controller.managed, `set_managed_by`) so status.json says who manages the
instance. Every save carries it over from the file it replaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from lima import paths
from lima.errors import LimaError
from lima.fsutil import atomic_write
from lima.states.model import Status

log = logging.getLogger(__name__)

# A directory found where status.json belongs is renamed to this (plus a time stamp), never
# removed: it is not ours, and whatever is inside may matter to someone.
ASIDE_SUFFIX = ".aside-"
MANAGED_BY = "managedBy"

# Unusable files already reported, for the whole process: a reconcile loads status.json
# every pass, and a verb may use more than one store. A successful save forgets its path.
_warned: set[tuple[Path, str]] = set()


class StatusWriteError(LimaError):
    """status.json could not be written; `path` and the OS's `reason` say why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason


DIRLESS_SUFFIX = ".status.json"


class StatusStore:
    """One status.json per instance under `home` (default: $LIMA_HOME, read at each call);
    with `dirless`, also the status of an instance that has no directory (see above)."""

    def __init__(self, home: Path | None = None, *, dirless: bool = False) -> None:
        self._home = home
        self._dirless = dirless

    def _lima_home(self) -> Path:
        return self._home if self._home is not None else paths.lima_home()

    def path(self, name: str) -> Path:
        return self._lima_home() / name / paths.STATUS_JSON

    def dirless_path(self, name: str) -> Path:
        from lima.controller.managed import CONTROL_DIR

        return self._lima_home() / CONTROL_DIR / f"{name}{DIRLESS_SUFFIX}"

    def load(self, name: str) -> Status | None:
        p = self.path(name)
        if self._dirless and not p.parent.is_dir():
            p = self.dirless_path(name)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:  # a directory, EACCES, EIO: facts still tell the phase
            self._warn(p, _os_reason(e))
            return None
        try:
            return Status.from_json(json.loads(raw.decode("utf-8")))
        except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError is a ValueError
            self._warn(p, f"unusable: {e}")
            return None

    def save(self, name: str, status: Status) -> bool:
        """Write atomically; False (nothing written) when the instance has no directory.

        The store never creates an instance directory: a failed create must leave nothing
        behind (its reason reaches the user through the verb's error), and a delete must
        not be resurrected. StatusWriteError when the OS refuses the write; the old file
        is then left as it was.
        """
        p = self.path(name)
        if not p.parent.is_dir():
            return self._dirless and self._save_dirless(name, status)
        doc = status.to_json()
        owner = self.managed_by(name)
        if owner is not None:
            doc[MANAGED_BY] = owner
        data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()
        try:
            self._move_aside_directory(p)
            # The reconciler trusts status.json after a crash: the rename must be durable.
            atomic_write(p, data, sync_dir=True)
        except OSError as e:
            raise StatusWriteError(p, _os_reason(e)) from None
        for seen in [w for w in _warned if w[0] == p]:
            _warned.discard(seen)
        if self._dirless:
            self.forget_dirless(name)
        return True

    def _save_dirless(self, name: str, status: Status) -> bool:
        from lima.drivers import safefs

        p = self.dirless_path(name)
        data = (json.dumps(status.to_json(), indent=2) + "\n").encode()
        try:
            safefs.ensure_owned_dir(p.parent)
            atomic_write(p, data, sync_dir=True)
        except OSError as e:
            raise StatusWriteError(p, _os_reason(e)) from None
        except safefs.UnsafeFileError as e:
            raise StatusWriteError(p, str(e)) from None
        return True

    def forget_dirless(self, name: str) -> None:
        """Remove the dir-less status of `name` (its directory exists now, or it is pruned)."""
        with contextlib.suppress(FileNotFoundError):
            self.dirless_path(name).unlink()

    def managed_by(self, name: str) -> str | None:
        """The `managedBy` key of status.json; None when absent or unreadable."""
        try:
            doc = json.loads(self.path(name).read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return None
        value = doc.get(MANAGED_BY) if isinstance(doc, dict) else None
        return value if isinstance(value, str) else None

    def set_managed_by(self, name: str, owner: str | None) -> bool:
        """Set (or, with None, drop) `managedBy` in an existing, usable status.json; False
        when there is none to set it in (the next save of a status carries the key only
        once it is there). Caller holds the instance lock."""
        p = self.path(name)
        try:
            doc = json.loads(p.read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(doc, dict) or doc.get(MANAGED_BY) == owner:
            return isinstance(doc, dict)
        if owner is None:
            doc.pop(MANAGED_BY, None)
        else:
            doc[MANAGED_BY] = owner
        try:
            atomic_write(p, (json.dumps(doc, indent=2) + "\n").encode(), sync_dir=True)
        except OSError as e:
            raise StatusWriteError(p, _os_reason(e)) from None
        return True

    def _move_aside_directory(self, p: Path) -> None:
        """A directory where status.json belongs cannot be replaced by a rename."""
        if p.is_symlink() or not p.is_dir():
            return
        aside = p.with_name(f"{p.name}{ASIDE_SUFFIX}{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists() or aside.is_symlink():
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
            n += 1
        os.rename(p, aside)
        log.warning("%s was a directory; moved it aside to %s (look inside, then remove it)",
                    p, aside)

    def _warn(self, p: Path, reason: str) -> None:
        if (p, reason) not in _warned:
            _warned.add((p, reason))
            log.warning("%s: %s; rebuilding the status from facts (the next save replaces it)",
                        p, reason)


def _os_reason(e: OSError) -> str:
    """The OS's words without Python's `[Errno N]` and file-name decoration."""
    return e.strerror or str(e)
