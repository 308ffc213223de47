"""Files another local user may try to plant: private directories and owner-only files.

Used by `lima.controller.lock` (lock and request files in `$LIMA_HOME/_locks`),
`lima.drivers.store` (LIMA_HOME itself) and `lima.drivers.identity` (`_config`). LIMA_HOME
may sit in a shared place (`/tmp/...`) and limactl may run as root: a symlink or hard link
planted at a lock path must never make limactl truncate the file it points to, and the
directories limactl makes must not be writable by anyone else, whatever the umask.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from lima.errors import LimaError
from lima.fsutil import atomic_write

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY


class UnsafeFileError(LimaError):
    """A path limactl would write is a symlink, someone else's, or not a regular file."""


def make_private_dir(path: Path) -> Path:
    """Create `path` and its missing parents as 0700 directories, whatever the umask.

    Directories that already exist keep their mode: a user may have chosen it.
    """
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process made it first; it is then theirs to have set up
        # mkdir's mode passes through the umask: 0 would still give 0700, but 0o277 gives
        # 0500 (unwritable); chmod says exactly what we mean.
        os.chmod(d, PRIVATE_DIR_MODE)
    return path


def ensure_owned_dir(path: Path) -> None:
    """`path` must be a directory (not a symlink) owned by us, writable by nobody else.

    A directory of ours that others can write to (made by an older limapy under umask 0)
    is repaired to 0700; one owned by someone else is refused.
    """
    make_private_dir(path)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(
            f"refusing to use {path}: it is a symbolic link or not a directory (limactl keeps"
            " its locks in a real directory it owns); remove it and retry"
        )
    if st.st_uid != os.geteuid():
        raise UnsafeFileError(
            f"refusing to use {path}: it is owned by uid {st.st_uid}, not by you"
            f" (uid {os.geteuid()}); another user may be trying to plant files in it"
        )
    if st.st_mode & 0o022:
        os.chmod(path, PRIVATE_DIR_MODE)


def _describe(st: os.stat_result) -> str:
    kind = stat.S_IFMT(st.st_mode)
    names = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
             stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
             stat.S_IFLNK: "a symbolic link"}
    return names.get(kind, "not a regular file")


def check_owned_file(fd: int, path: Path) -> None:
    """Refuse an open file that is not a regular file of ours with a single link; make
    its mode 0600 (lock files of older versions were 0644)."""
    st = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(st.st_mode):
        problem = f"it is {_describe(st)}, not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"it is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_nlink != 1:
        # A hard link to someone else's file would pass the owner check as root.
        problem = f"it has {st.st_nlink} hard links"
    if problem:
        raise UnsafeFileError(
            f"refusing to use {path}: {problem}; another user may be trying to make limactl"
            " overwrite a file. Remove it if you did not make it, then retry"
        )
    if stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE:
        os.fchmod(fd, PRIVATE_FILE_MODE)


def open_private_file(path: Path, flags: int = os.O_RDWR, *, create: bool = True) -> int:
    """Open (creating 0600 when `create`) a regular file of ours without following a
    symlink at `path`; returns the fd. Raises UnsafeFileError for anything else, or
    FileNotFoundError when it does not exist and `create` is False."""
    if create:
        try:
            fd = os.open(path, flags | _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            pass
        else:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits away
            return fd
    try:
        fd = os.open(path, flags | _OPEN_FLAGS | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"refusing to use {path}: it is a symbolic link; another user may be trying"
                " to make limactl overwrite the file it points to. Remove it if you did not"
                " make it, then retry"
            ) from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise UnsafeFileError(f"refusing to use {path}: it is not a regular file") \
                from None
        raise
    try:
        check_owned_file(fd, path)
        # O_NONBLOCK only kept a FIFO planted there from blocking the open.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private_file(path: Path, limit: int = 65536) -> bytes | None:
    """The content of a regular file of ours (at most `limit` bytes), None when missing."""
    try:
        fd = open_private_file(path, os.O_RDONLY, create=False)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file holding `data`. The temp is created
    O_EXCL beside it and renamed over it: a rename replaces a symlink planted at `path`
    instead of writing through it (see lima.fsutil)."""
    atomic_write(path, data, mode=PRIVATE_FILE_MODE)
