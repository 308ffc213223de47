"""Which instances a folder controller manages, and which of them a user paused.

`$LIMA_HOME/_controller/NAME.json` says who manages instance NAME (`managedBy:
controller:DIR`), from which file, and the digest of the file version last seen, so a
controller that restarts knows which versions are new (a new version resets the backoff;
an old one does not) and which instances it must prune when their file is gone. Only the
controller writes it, under the instance lock. `_controller/NAME.paused` is the pause
marker (`limactl controller pause NAME`): the controller leaves the instance alone while
it exists. `limactl list` shows both; `limactl stop` refuses a managed, unpaused instance
(the controller would start it again), and so does `limactl delete`. `_controller` starts
with `_`: never an instance. `set_ownership` also writes `managedBy` into the instance's
status.json (lima.controller.status_store), so the instance's own status says who drives it.
`_controller/NAME.log` holds the controller's decision lines about NAME (`append_log`,
from lima.controller.folder.DecisionLog) for `limactl watch`: here, not in the instance
directory, so a guest-visible or user-shared directory never holds them and a controller
can log about an instance that does not exist yet. `remove_logs` drops them with the
instance (`limactl delete`, a prune by deletion).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from lima import paths
from lima.drivers import safefs
from lima.errors import LimaError, SpecError
from lima.names import validate_name

CONTROL_DIR = "_controller"
PAUSED_SUFFIX = ".paused"
OWNER_SUFFIX = ".json"
LOG_SUFFIX = ".log"
LOG_MAX = 256 * 1024  # past this NAME.log becomes NAME.log.1 (one old file is kept)


def control_dir() -> Path:
    return paths.lima_home() / CONTROL_DIR


def owner_label(folder: Path) -> str:
    return f"controller:{folder}"


class Ownership(NamedTuple):  # (not a dataclass: `limactl list` imports this module)
    managed_by: str  # "controller:/abs/DIR"
    file: str  # the lima.yaml in DIR
    digest: str  # sha256 of the file version last seen ("" when none was readable)

    def to_json(self) -> dict[str, Any]:
        return {"managedBy": self.managed_by, "file": self.file, "digest": self.digest}


def ownership(name: str) -> Ownership | None:
    validate_name(name)
    p = control_dir() / f"{name}{OWNER_SUFFIX}"
    try:
        raw = safefs.read_private_file(p, 64 * 1024)
    except (OSError, safefs.UnsafeFileError):
        return None
    if raw is None:
        return None
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(d, dict) or not all(isinstance(d.get(k), str)
                                          for k in ("managedBy", "file", "digest")):
        return None
    return Ownership(d["managedBy"], d["file"], d["digest"])


def set_ownership(name: str, owner: Ownership | None) -> None:
    """Record (or, with None, forget) who manages `name`. Caller holds the instance lock."""
    from lima.controller.status_store import StatusStore

    validate_name(name)
    p = control_dir() / f"{name}{OWNER_SUFFIX}"
    if owner is None:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    else:
        safefs.ensure_owned_dir(p.parent)
        safefs.write_private_file(p, (json.dumps(owner.to_json()) + "\n").encode())
    StatusStore().set_managed_by(name, owner.managed_by if owner is not None else None)


def owned_by(label: str) -> list[str]:
    """Names of the instances whose record says `label` manages them."""
    d = control_dir()
    try:
        entries = sorted(os.listdir(d))
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.endswith(OWNER_SUFFIX):
            name = entry[: -len(OWNER_SUFFIX)]
            try:
                rec = ownership(name)
            except SpecError:  # a stray file there names no instance
                continue
            if rec is not None and rec.managed_by == label:
                out.append(name)
    return out


def paused_path(name: str) -> Path:
    validate_name(name)
    return control_dir() / f"{name}{PAUSED_SUFFIX}"


def is_paused(name: str) -> bool:
    return paused_path(name).is_file()


def pause(name: str, command: str = "limactl controller pause") -> None:
    p = paused_path(name)
    safefs.ensure_owned_dir(p.parent)
    safefs.write_private_file(p, f"{os.getpid()} {time.time():.0f} {command}\n".encode())


def resume(name: str) -> bool:
    """Remove the pause marker; False when there was none."""
    try:
        paused_path(name).unlink()
    except FileNotFoundError:
        return False
    return True


def describe(name: str) -> dict[str, Any]:
    """For `limactl list`: {"managedBy": ..., "controllerPaused": bool}, or {} if unmanaged."""
    if not os.path.isdir(control_dir()):  # no controller ever ran here: one stat, no opens
        validate_name(name)
        return {}
    rec = ownership(name)
    paused = is_paused(name)
    if rec is None and not paused:
        return {}
    out: dict[str, Any] = {"controllerPaused": paused}
    if rec is not None:
        out["managedBy"] = rec.managed_by
    return out


def log_path(name: str) -> Path:
    validate_name(name)
    return control_dir() / f"{name}{LOG_SUFFIX}"


def append_log(name: str, line: str) -> None:
    """Append one decision line to `_controller/NAME.log` (created 0600) in a single
    O_APPEND write, so readers never see half a line from a concurrent writer. Past
    LOG_MAX the file is renamed to NAME.log.1 first (replacing the older one)."""
    p = log_path(name)
    data = (line.rstrip("\n") + "\n").encode()
    safefs.ensure_owned_dir(p.parent)
    fd = safefs.open_private_file(p, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and size + len(data) > LOG_MAX:
            os.close(fd)
            fd = -1
            # A rotation, not a write: the full log becomes the one old file kept (rename
            # drops the previous NAME.log.1); the next line starts a new 0600 NAME.log.
            os.rename(p, p.with_name(p.name + ".1"))
            fd = safefs.open_private_file(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd, data)
    finally:
        if fd >= 0:
            os.close(fd)


def remove_logs(name: str) -> None:
    """Forget the decision lines about `name` (NAME.log and NAME.log.1), the status
    kept while it had no directory (NAME.status.json, lima.controller.status_store) and
    the idle-suspend marker (NAME.idle, lima.controller.idle)."""
    from lima.controller.status_store import DIRLESS_SUFFIX

    p = log_path(name)
    for q in (p, p.with_name(p.name + ".1"), p.with_name(name + DIRLESS_SUFFIX),
              p.with_name(name + ".idle")):
        with contextlib.suppress(FileNotFoundError):
            q.unlink()


def refuse_if_managed(name: str, *, undone_by: str, advice: str) -> None:
    """LimaError when a controller manages `name` and is not paused: a verb done by hand
    would be undone (`undone_by`: what the controller would do; `advice`: what to do)."""
    owner = ownership(name)
    if owner is None or is_paused(name):
        return
    raise LimaError(
        f"instance {name!r} is managed by {owner.managed_by} (from {owner.file}), which would"
        f" {undone_by}; {advice}"
    )
