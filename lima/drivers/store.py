"""The instance store: instance directories in LIMA_HOME, created atomically, listed,
inspected, deleted without losing anything that is not ours.

Called by the verbs (create, list, delete, protect), by the QEMU driver and by
`lima.controller.lock` (leftovers). `create_instance` builds the directory under a hidden
work name and renames it into place, so a failure leaves no instance behind; `inspect`
derives the status from facts (pid files, live processes, ha.sock), never from memory.
`delete_instance_dir` removes only the entries `paths.is_known_instance_entry` lists.
Work directories and temp files a killed limactl left are removed by `remove_leftovers`
once their maker is dead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from lima import LIMA_COMPAT_VERSION, paths
from lima.drivers import procs, safefs
from lima.drivers.disklayout import lima2_pending
from lima.errors import LimaError, NotFoundError
from lima.fsutil import atomic_write
from lima.names import instance_dir_for, validate_name

# Re-exported: callers predating lima.names and lima.fsutil use them here.
__all__ = ["atomic_write", "validate_name"]


STATUS_RUNNING = "Running"
STATUS_STOPPED = "Stopped"
STATUS_BROKEN = "Broken"
# Not one of Lima's: the guest's whole state is saved (limactl suspend); start resumes it.
STATUS_SUSPENDED = "Suspended"


def create_instance(
    name: str, lima_yaml: str, prepare: Callable[[Path], None] | None = None
) -> Path:
    """Create `$LIMA_HOME/NAME` with lima.yaml and lima-version, then `prepare(tmpdir)`.

    Everything happens in a hidden temporary directory renamed into place at the end, so
    a failure (or an interrupt) leaves no instance directory behind.
    """
    final = instance_dir_for(name)
    home = final.parent
    if final.exists():
        raise LimaError(f"instance {name!r} already exists ({final})")
    safefs.make_private_dir(home)
    import tempfile  # here: `limactl list` imports this module and never creates

    tmp = Path(tempfile.mkdtemp(prefix=paths.work_dir_name("creating", name, os.getpid(), ""),
                                dir=home))
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
        kept = _remove_known_entries(tmp)
        if not kept:
            with contextlib.suppress(OSError):
                os.rmdir(tmp)
        raise
    return final


def instance_names() -> list[str]:
    home = paths.lima_home()
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if paths.is_instance_dir(p))


def require_instance(name: str) -> Path:
    """The directory of instance `name` (the name checked first); NotFoundError if none."""
    d = instance_dir_for(name)
    if not d.is_dir() or not paths.is_instance_dir(d):
        raise NotFoundError(f"instance {name!r} does not exist, run `limactl create --name={name}`")
    return d


def is_protected(inst_dir: Path) -> bool:
    return (inst_dir / paths.PROTECTED).exists()


class Inspection:
    """What `limactl list` shows of one instance, derived from facts on disk and in /proc.
    (A plain class, not a dataclass: `limactl list` imports this module, and `dataclasses`
    costs several milliseconds of its start-up.)"""

    __slots__ = (
        "dir",
        "driver_pid",
        "errors",
        "hostagent_pid",
        "lima_version",
        "name",
        "protected",
        "status",
    )

    def __init__(self, name: str, dir: Path, status: str,
                 errors: list[str] | None = None, hostagent_pid: int = 0,
                 driver_pid: int = 0, protected: bool = False, lima_version: str = "") -> None:
        self.name = name
        self.dir = dir
        self.status = status
        self.errors: list[str] = [] if errors is None else errors
        self.hostagent_pid = hostagent_pid
        self.driver_pid = driver_pid
        self.protected = protected
        self.lima_version = lima_version

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Inspection):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"Inspection({inner})"


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
    elif not (ha_alive or qemu_alive):
        if (inst_dir / paths.SUSPEND_STATE).is_file() and (
                inst_dir / paths.SUSPEND_META).is_file():
            ins.status = STATUS_SUSPENDED
    elif ha_alive or qemu_alive:
        ins.status = STATUS_BROKEN
        which = "host agent" if ha_alive else "qemu"
        other = "qemu" if ha_alive else "host agent"
        ins.errors.append(f"{which} is running but {other} is not")
    if not (inst_dir / paths.LIMA_YAML).is_file():
        ins.status = STATUS_BROKEN
        ins.errors.append(f"{inst_dir / paths.LIMA_YAML} is missing")
    elif not (inst_dir / paths.DIFFDISK).exists() and not lima2_pending(inst_dir):
        from lima.drivers.images.repair import has_booted

        if has_booted(inst_dir):
            # Not "Stopped": starting it would need the disk that held the guest's data.
            ins.status = STATUS_BROKEN
            ins.errors.append(f"{inst_dir / paths.DIFFDISK} is missing: the instance's disk "
                              "(its data) is gone")
    return ins


def require_deletable(inst_dir: Path) -> None:
    """Refuse to delete what is not an instance directory limactl (or Lima) made: a
    symlink (its target is not ours to empty) or a directory without lima.yaml."""
    try:
        st = os.lstat(inst_dir)
    except FileNotFoundError:
        raise NotFoundError(f"instance {inst_dir.name!r} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise LimaError(
            f"{inst_dir} is a symbolic link, not an instance directory; nothing was deleted"
            " (remove the link yourself if it is no longer needed)"
        )
    yaml_st = None
    with contextlib.suppress(OSError):
        yaml_st = os.lstat(inst_dir / paths.LIMA_YAML)
    if yaml_st is None or not stat.S_ISREG(yaml_st.st_mode):
        raise LimaError(
            f"{inst_dir} has no {paths.LIMA_YAML}, so it is not an instance limactl made (it"
            " may hold a user's disk); nothing was deleted. Look inside and remove it"
            " yourself if it is garbage"
        )


def delete_instance_dir(inst_dir: Path) -> None:
    """Delete an instance directory, removing only the entries an instance holds.

    It is renamed to a hidden work name first, so a half-deleted instance is never listed
    and a killed delete leaves a directory `remove_leftovers` finishes. When entries
    limactl did not make are left (a user's file), the directory goes back under its name
    with only those, and LimaError says which were kept.
    """
    require_deletable(inst_dir)
    name = inst_dir.name
    trash = inst_dir.parent / paths.work_dir_name(
        "deleting", name, os.getpid(), os.urandom(4).hex())
    os.rename(inst_dir, trash)
    kept = _remove_known_entries(trash)
    if not kept:
        try:
            os.rmdir(trash)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            kept = _remove_known_entries(trash)  # something appeared meanwhile
    place = _put_back(trash, inst_dir)
    raise LimaError(
        f"instance {name!r} was deleted, but {place} is kept: it holds entries limactl did"
        f" not create: {', '.join(kept)}. Move them elsewhere, then remove the directory"
    )


def unknown_entries(inst_dir: Path) -> list[str]:
    """The entries of an instance directory a delete would keep (limactl did not make
    them), sorted, subdirectories with a `/`; nothing is removed."""
    try:
        with os.scandir(inst_dir) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    except FileNotFoundError:
        return []
    return sorted(entry + "/" if is_dir else entry for entry, is_dir in names
                  if (not _socket_dir(inst_dir / entry) if is_dir
                      else not paths.is_known_instance_entry(entry)))


def _socket_dir(path: Path) -> bool:
    """Whether `path` is the instance's sock/ directory holding nothing but sockets."""
    if path.name != paths.SOCK_DIR:
        return False
    try:
        with os.scandir(path) as entries:
            return all(stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode) for e in entries)
    except OSError:
        return False


def _remove_socket_dir(dfd: int) -> bool:
    """Remove the sockets in sock/ (under the directory `dfd`) and sock/ itself; False, and
    nothing removed, when it holds anything else."""
    try:
        sub = os.open(paths.SOCK_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                      | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    try:
        with os.scandir(sub) as it:
            entries = [(e.name, e.stat(follow_symlinks=False).st_mode) for e in it]
        if not all(stat.S_ISSOCK(mode) for _, mode in entries):
            return False
        for name, _ in entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=sub)
    finally:
        os.close(sub)
    try:
        os.rmdir(paths.SOCK_DIR, dir_fd=dfd)
    except OSError:
        return False
    return True


def _put_back(work: Path, inst_dir: Path) -> Path:
    """Give a directory whose unknown entries were kept its instance name back, so the user
    finds it where it was (unless that name was taken meanwhile)."""
    try:
        os.rename(work, inst_dir)
    except OSError:
        return work
    return inst_dir


def _remove_known_entries(directory: Path) -> list[str]:
    """Unlink every entry of `directory` that `paths.is_known_instance_entry` lists, and the
    sock/ directory when it holds only sockets; return the names of the others, sorted
    (other subdirectories are never ours: kept, with a `/`).

    Works through a file descriptor of the directory opened without following a symlink,
    so a directory swapped under it cannot redirect the unlinks.
    """
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    kept: list[str] = []
    try:
        with os.scandir(dfd) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for entry, is_dir in names:
            if is_dir:
                if not (entry == paths.SOCK_DIR and _remove_socket_dir(dfd)):
                    kept.append(entry + "/")
                continue
            if not paths.is_known_instance_entry(entry):
                kept.append(entry)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=dfd)
    finally:
        os.close(dfd)
    return sorted(kept)


# Temps in an instance directory with their writer's PID: `.NAME.PID.XXXX` (atomic_write),
# `.NAME.PID.tmp` (host agent), `.NAME.tmp.PID` (cidata, ssh.config).
_PID_TOKEN = re.compile(r"^[0-9]+$")
_PID_MAX = 4_194_304  # Linux's PID_MAX_LIMIT


def _maybe_alive(pid: int) -> bool:
    """False only when `pid` is surely dead; a number that cannot be a PID counts as alive
    (then its work is not ours to judge)."""
    return not 0 < pid <= _PID_MAX or procs.pid_alive(pid)


def remove_leftovers(name: str) -> list[str]:
    """Remove what a killed create, delete or clone of instance `name` left: its
    `.creating-*` / `.deleting-*` / `.cloning-*` work directories in LIMA_HOME and the
    atomic-write temps in its directory, but only those whose maker (the PID in their
    name) is dead. A `.cloning-` one holds only copies: it is removed whole.

    The caller holds the instance lock: `.status.*.tmp` (no PID in its name) is written
    only under that lock, so none of those can belong to a live writer. Returns what was
    removed; a work directory holding entries that are not ours is left (a `.deleting-`
    one is put back under the instance name when that is free) and logged.
    """
    home = paths.lima_home()
    removed: list[str] = []
    try:
        with os.scandir(home) as it:
            entries = list(it)
    except OSError:
        return removed
    for entry in entries:
        parsed = paths.parse_work_dir(entry.name)
        if parsed is None or parsed[1] != name or _maybe_alive(parsed[2]):
            continue
        work = Path(entry.path)
        if parsed[0] == "cloning":
            # Nothing in it but the copies the killed clone made (its source is untouched).
            import shutil

            shutil.rmtree(work, ignore_errors=True)
            if not work.exists():
                removed.append(str(work))
            continue
        kept = _remove_known_entries(work)
        if not kept:
            with contextlib.suppress(OSError):
                os.rmdir(work)
                removed.append(str(work))
            continue
        place = _put_back(work, home / name) if parsed[0] == "deleting" else work
        import logging  # here: `limactl list` imports this module and never logs

        logging.getLogger(__name__).warning(
            "%s: kept %s left by a killed limactl (PID %d): it holds %s", name, place,
            parsed[2], ", ".join(kept))
    removed.extend(_remove_stale_temps(home / name))
    return removed


def _remove_stale_temps(inst_dir: Path) -> list[str]:
    removed: list[str] = []
    try:
        with os.scandir(inst_dir) as it:
            entries = [e for e in it if e.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        if not paths.is_known_instance_entry(entry.name) or entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(".status.") and entry.name.endswith(".tmp"):
            stale = True  # see remove_leftovers: written only under the instance lock
        else:
            pids = [int(t) for t in entry.name.split(".") if _PID_TOKEN.match(t)]
            pids = [p for p in pids if 0 < p <= _PID_MAX]  # the rest are random suffixes
            stale = bool(pids) and not any(_maybe_alive(p) for p in pids)
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed
