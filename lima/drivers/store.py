"""The instance store: instance directories in LIMA_HOME, created atomically, listed, inspected.

Called by the verbs (create, list, delete, protect) and by the controller. `create_instance`
builds the directory under a temporary name and renames it into place, so a failure leaves
nothing behind; `inspect` derives the status from facts (pid files, live processes,
ha.sock), never from memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lima import LIMA_COMPAT_VERSION, paths
from lima.drivers import procs
from lima.errors import LimaError, NotFoundError
from lima.names import validate_name

__all__ = ["validate_name"]  # re-exported: callers predating lima.names use it here

STATUS_RUNNING = "Running"
STATUS_STOPPED = "Stopped"
STATUS_BROKEN = "Broken"


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write a file by temp + fsync + rename, so readers see the old or the new content."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_instance(
    name: str, lima_yaml: str, prepare: Callable[[Path], None] | None = None
) -> Path:
    """Create `$LIMA_HOME/NAME` with lima.yaml and lima-version, then `prepare(tmpdir)`.

    Everything happens in a hidden temporary directory renamed into place at the end, so
    a failure (or an interrupt) leaves no instance directory behind.
    """
    validate_name(name)
    home = paths.lima_home()
    final = home / name
    if final.exists():
        raise LimaError(f"instance {name!r} already exists ({final})")
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".creating-{name}-", dir=home))
    try:
        atomic_write(tmp / paths.LIMA_YAML, lima_yaml)
        atomic_write(tmp / paths.LIMA_VERSION, LIMA_COMPAT_VERSION)
        if prepare is not None:
            prepare(tmp)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if final.exists():
                raise LimaError(f"instance {name!r} already exists ({final})") from exc
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def instance_names() -> list[str]:
    home = paths.lima_home()
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if paths.is_instance_dir(p))


def require_instance(name: str) -> Path:
    d = paths.instance_dir(name)
    if not d.is_dir() or not paths.is_instance_dir(d):
        raise NotFoundError(f"instance {name!r} does not exist, run `limactl create --name={name}`")
    return d


def is_protected(inst_dir: Path) -> bool:
    return (inst_dir / paths.PROTECTED).exists()


@dataclass
class Inspection:
    """What `limactl list` shows of one instance, derived from facts on disk and in /proc."""

    name: str
    dir: Path
    status: str
    errors: list[str] = field(default_factory=list)
    hostagent_pid: int = 0
    driver_pid: int = 0
    protected: bool = False
    lima_version: str = ""


def inspect_processes(name: str, inst_dir: Path) -> Inspection:
    """Status from pid files: both alive = Running, none = Stopped, else Broken."""
    ha = procs.hostagent_pid(inst_dir)
    qemu = procs.qemu_pid(inst_dir)
    ha_alive, qemu_alive = ha is not None, qemu is not None
    ins = Inspection(name=name, dir=inst_dir, status=STATUS_STOPPED)
    ins.protected = is_protected(inst_dir)
    with contextlib.suppress(OSError):
        ins.lima_version = (inst_dir / paths.LIMA_VERSION).read_text().strip()
    if ha_alive:
        ins.hostagent_pid = ha or 0
    if qemu_alive:
        ins.driver_pid = qemu or 0
    if ha_alive and qemu_alive:
        ins.status = STATUS_RUNNING
    elif ha_alive or qemu_alive:
        ins.status = STATUS_BROKEN
        which = "host agent" if ha_alive else "qemu"
        other = "qemu" if ha_alive else "host agent"
        ins.errors.append(f"{which} is running but {other} is not")
    if not (inst_dir / paths.LIMA_YAML).is_file():
        ins.status = STATUS_BROKEN
        ins.errors.append(f"{inst_dir / paths.LIMA_YAML} is missing")
    return ins


def delete_instance_dir(inst_dir: Path) -> None:
    """Remove an instance directory; renamed first so a half-deleted one is never listed."""
    trash = inst_dir.parent / f".deleting-{inst_dir.name}-{os.getpid()}"
    os.rename(inst_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
