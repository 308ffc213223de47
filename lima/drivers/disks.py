"""Lima disks: `$LIMA_HOME/_disks/NAME/datadisk` and the `in_use_by` symlink lock.

A disk lives apart from every instance, so deleting an instance never touches it. While
an instance uses it, `_disks/NAME/in_use_by` is a symlink to that instance's directory
(Lima's layout, so Lima and limapy read each other's locks); another instance is refused
with the holder's name. Called by `limactl disk` (lima.commands.disk), by the QEMU driver
when it starts a guest (`lock_for_instance`, `drives`) and whenever a guest is gone (the
host agent's exit, stop, delete: `unlock_instance_disks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lima import paths
from lima.errors import LimaError, NotFoundError, PermanentError, SpecError
from lima.units import bytes_size

DISK_DIR = "_disks"  # Lima's name (its filenames.DisksDir)
# Where limapy kept disks before it used Lima's name: moved to DISK_DIR on first use.
LEGACY_DISK_DIR = "_disk"
DATADISK = "datadisk"
IN_USE_BY = "in_use_by"
FORMATS = ("qcow2", "raw")

_QCOW2_MAGIC = b"QFI\xfb"
_NAME = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")


def disks_root() -> Path:
    """`$LIMA_HOME/_disks`. A `_disk` an older limapy made (and no `_disks`) is renamed to
    it first, atomically, so its disks are Lima's and limapy's alike."""
    root = paths.lima_home() / DISK_DIR
    legacy = paths.lima_home() / LEGACY_DISK_DIR
    if not os.path.lexists(root) and legacy.is_dir() and not legacy.is_symlink():
        with contextlib.suppress(FileNotFoundError):  # another limactl moved it meanwhile
            os.rename(legacy, root)
    return root


def disk_dir(name: str) -> Path:
    """`$LIMA_HOME/_disks/NAME` for a valid disk name (letters, digits, `.`, `_`, `-`)."""
    if not _NAME.match(name):
        raise SpecError(f"invalid disk name `{name}`: use letters, digits and . _ - "
                        "(not at the start or the end)")
    return disks_root() / name


@dataclass(frozen=True)
class Disk:
    """What `limactl disk list --json` prints: Lima's store.Disk, field for field."""

    name: str
    size: int
    format: str
    dir: Path
    instance: str = ""
    instance_dir: str = ""
    mount_point: str = ""
    fs_type: str | None = None

    @property
    def datadisk(self) -> Path:
        return self.dir / DATADISK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "size": self.size, "format": self.format, "dir": str(self.dir),
            "instance": self.instance, "instanceDir": self.instance_dir,
            "mountPoint": self.mount_point,
        }
        if self.fs_type is not None:
            out["fsType"] = self.fs_type
        return out

    def json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def image_format_and_size(path: Path) -> tuple[str, int]:
    """("qcow2", virtual size) from a qcow2 header, else ("raw", file size). No qemu-img,
    so `limactl disk list` stays fast and works without QEMU."""
    with open(path, "rb") as f:
        head = f.read(32)
        size = os.fstat(f.fileno()).st_size
    if len(head) >= 32 and head[:4] == _QCOW2_MAGIC:
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", size


def inspect_disk(name: str, fs_type: str | None = None) -> Disk:
    """The disk NAME; NotFoundError when it has no datadisk."""
    directory = disk_dir(name)
    data = directory / DATADISK
    if not data.is_file():
        raise NotFoundError(f"disk `{name}` does not exist")
    fmt, size = image_format_and_size(data)
    try:
        holder = os.readlink(directory / IN_USE_BY)
    except FileNotFoundError:
        holder = ""
    except OSError as exc:
        raise PermanentError(f"cannot read the lock of disk `{name}`: {exc}") from exc
    mount = "[SWAP]" if fs_type == "swap" else f"/mnt/lima-{name}"
    return Disk(name=name, size=size, format=fmt, dir=directory,
                instance=os.path.basename(holder) if holder else "", instance_dir=holder,
                mount_point=mount, fs_type=fs_type)


def disk_names() -> list[str]:
    """Every directory in `_disks`, sorted (Lima's store.Disks)."""
    root = disks_root()
    try:
        return sorted(e.name for e in root.iterdir() if e.is_dir())
    except FileNotFoundError:
        return []


def lock_for_instance(disk: Disk, inst_dir: Path) -> None:
    """Take the disk for `inst_dir`; refuse a disk another instance holds."""
    if disk.instance:
        if os.path.realpath(disk.instance_dir) != os.path.realpath(inst_dir):
            hint = "" if instance_running(disk.instance) else (
                f" (it is not running: `limactl disk unlock {disk.name}` frees the disk)")
            raise PermanentError(f"could not attach disk `{disk.name}`: in use by instance "
                                 f"`{disk.instance}`{hint}")
        unlock(disk)
    os.symlink(str(inst_dir), disk.dir / IN_USE_BY)


def unlock(disk: Disk) -> None:
    (disk.dir / IN_USE_BY).unlink(missing_ok=True)


def unlock_instance_disks(inst_dir: Path) -> list[str]:
    """Free every disk whose lock points at `inst_dir` (its guest is gone); return names."""
    freed: list[str] = []
    target = os.path.realpath(inst_dir)
    for name in disk_names():
        link = disks_root() / name / IN_USE_BY
        try:
            holder = os.readlink(link)
        except OSError:
            continue
        if os.path.realpath(holder) == target:
            link.unlink(missing_ok=True)
            freed.append(name)
    return freed


def instance_running(name: str) -> bool:
    """Whether the instance NAME has a live host agent or qemu."""
    from lima.drivers import procs

    try:
        inst = paths.instance_dir(name)
    except LimaError:
        return False
    return procs.hostagent_pid(inst) is not None or procs.qemu_pid(inst) is not None


def attach_for_start(disk_names_: list[str], inst_dir: Path) -> list[tuple[Path, str]]:
    """Lock every disk for `inst_dir` (all or none) and return (datadisk, format) pairs in
    order, for the QEMU argv. A missing disk or one held elsewhere is a PermanentError."""
    found = []
    for name in disk_names_:
        try:
            found.append(inspect_disk(name))
        except NotFoundError:
            raise PermanentError(f"could not load disk `{name}`: it does not exist (create it "
                                 f"with `limactl disk create {name} --size SIZE`)") from None
    taken: list[Disk] = []
    try:
        for disk in found:
            lock_for_instance(disk, inst_dir)
            taken.append(disk)
    except BaseException:
        for disk in taken:
            unlock(disk)
        raise
    return [(d.datadisk, d.format) for d in found]


def create_disk(name: str, size: int, fmt: str) -> Disk:
    """Make `_disks/NAME/datadisk` with qemu-img; nothing is left behind on failure."""
    from lima.drivers import runner

    if fmt not in FORMATS:
        raise LimaError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    directory = disk_dir(name)
    if directory.exists() or directory.is_symlink():
        raise LimaError(f"disk `{name}` already exists (`{directory}`)")
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    try:
        runner.run(["qemu-img", "create", "-q", "-f", fmt, directory / DATADISK, str(size)])
    except BaseException as exc:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, runner.CommandError):
            raise LimaError(f"failed to create {fmt} disk in `{directory}`: {exc}") from exc
        raise
    return inspect_disk(name)


def resize_disk(disk: Disk, size: int) -> None:
    """Grow the datadisk to `size` bytes (never shrink: the caller checks first)."""
    from lima.drivers import runner

    if size < disk.size:
        raise LimaError(f"specified size `{bytes_size(size)}` is less than the current disk "
                        f"size `{bytes_size(disk.size)}`. Disk shrinking is currently "
                        "unavailable")
    try:
        runner.run(["qemu-img", "resize", "-q", "-f", disk.format, disk.datadisk, str(size)])
    except runner.CommandError as exc:
        raise LimaError(f"failed to resize disk `{disk.name}`: {exc}") from exc


def import_disk(name: str, source: Path) -> Disk:
    """Make `_disks/NAME/datadisk` a copy of the image file `source` (qcow2 or raw, as
    `qemu-img info` sees it), as `limactl disk import` does. The copy is a reflink where
    the file system can, else sparse. A qcow2 naming another host file (backing file,
    external data file) is refused: copied alone it would not open, and booted it would
    make the guest read that host file. Nothing is left behind on failure."""
    import shutil

    from lima.drivers.images.disks import clone_file
    from lima.drivers.images.imagecheck import host_files_named, qemu_img_info

    directory = disk_dir(name)
    if directory.exists() or directory.is_symlink():
        raise LimaError(f"disk `{name}` already exists (`{directory}`)")
    try:
        with open(source, "rb"):
            pass
    except OSError as exc:
        raise LimaError(f"open {source}: {exc.strerror.lower() if exc.strerror else exc}"
                        ) from None
    if not source.is_file():
        raise LimaError(f"{source}: not a regular file")
    info = qemu_img_info(source)
    fmt = str(info.get("format", ""))
    if fmt not in FORMATS:
        raise LimaError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    named = host_files_named(info)
    if named:
        role, host_path = named[0]
        raise LimaError(f"{source}: refusing to import: it names the host file {host_path} "
                        f"as its {role}; `qemu-img convert -O qcow2 {source} NEW.qcow2` "
                        "makes a self-contained copy to import")
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    try:
        clone_file(source, directory / DATADISK)
    except BaseException as exc:
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LimaError(f"failed to copy `{source}` to `{directory / DATADISK}`: "
                            f"{exc}") from exc
        raise
    return inspect_disk(name)
