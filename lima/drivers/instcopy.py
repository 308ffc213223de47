"""What an instance directory's files become on `limactl clone`, `rename` and
`factory-reset`: copied, moved, made again at the next boot, or removed.

Called by lima.commands.clone (clone, rename) and lima.commands.factoryreset, for stopped
instances, with the instance locks held. The rules follow Lima's (pkg/instance/clone.go,
cmd/limactl/factory-reset.go), with limapy's own files added:

- clone copies lima.yaml, lima-version, the disks (basedisk + diffdisk, or Lima 2's
  `disk`/`iso`/`image`), kernel, initrd, logs and any file a user put there, each into an
  inode of its own (a reflink where the file system can, else a sparse copy: never a hard
  link, so two instances never share a writable disk). Not copied: `protected` (a clone is
  unprotected, as in Lima), Lima's `swtpm/`, process state (`*.pid`, `*.sock`, `*.tmp`,
  the `sock/` directory) and what the next boot makes again for the new name (cidata,
  ssh.config, status.json, the applied spec: `PER_BOOT`). It is assembled in a hidden work
  directory renamed into place, so a failure leaves no target and the source untouched.
- rename moves the whole directory in one rename(2), then drops `PER_BOOT` files and stale
  process state. Unlike Lima, `protected` stays: renaming loses no data.
- factory-reset removes every file limactl or Lima made except lima.yaml, lima-version,
  protected, Lima's vz-identifier and other `*.yaml`: the disks (everything the guest wrote)
  go, and the next start prepares them from the images again. Files limactl did not make
  are kept (limapy never deletes a user's file) and named.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import tempfile
from fnmatch import fnmatchcase
from pathlib import Path

from lima import paths
from lima.drivers import runner
from lima.drivers.images.disks import clone_file
from lima.errors import LimaError
from lima.fsutil import atomic_write
from lima.names import instance_dir_for

# Made again for every boot, or bound to the old name: never carried to a new name.
PER_BOOT = frozenset({
    paths.CIDATA_ISO, paths.CIDATA_META, paths.CLOUD_CONFIG, paths.ANSIBLE_INVENTORY,
    paths.SSH_CONFIG, paths.STATUS_JSON, paths.APPLIED_SPEC, paths.HA_QEMU_ARGV,
    paths.HA_VIRTIOFSD, paths.VNC_DISPLAY, paths.VNC_PASSWORD,
})
# Lima's SkipOnClone (TPM state must not be shared) and NullifyOnClone.
SKIP_ON_CLONE = frozenset({paths.PROTECTED, "swtpm"})
NULLIFY_ON_CLONE = frozenset({"vz-identifier"})
# Lima's TmpFileSuffixes, plus ssh's ControlMaster socket while it is being made.
PROCESS_STATE = ("*.pid", "*.sock", "*.tmp", "ssh.sock.*")
# What factory-reset keeps of the entries limactl or Lima made (Lima's list).
KEPT_ON_RESET = frozenset({paths.LIMA_YAML, paths.LIMA_VERSION, paths.PROTECTED,
                           "vz-identifier"})

_QCOW2_MAGIC = b"QFI\xfb"


def _process_state(entry: str) -> bool:
    return any(fnmatchcase(entry, p) for p in PROCESS_STATE)


def clone_instance(src: Path, name: str, lima_yaml: str | None = None) -> Path:
    """Copy stopped instance `src` to `$LIMA_HOME/NAME` (see the module docstring);
    `lima_yaml`, when given, is the clone's lima.yaml instead of the source's. Everything
    is made in `.cloning-NAME@PID-*` and renamed into place at the end: on any failure
    (or an interrupt) that directory is removed and nothing else was touched."""
    final = instance_dir_for(name)
    if final.exists() or final.is_symlink():
        raise LimaError(f"instance `{name}` already exists")
    tmp = Path(tempfile.mkdtemp(prefix=paths.work_dir_name("cloning", name, os.getpid(), ""),
                                dir=final.parent))
    try:
        _copy_entries(src, tmp)
        if lima_yaml is not None:
            atomic_write(tmp / paths.LIMA_YAML, lima_yaml)
        own_backing_file(tmp, src)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if final.exists():
                raise LimaError(f"instance `{name}` already exists") from exc
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _copy_entries(src: Path, dst: Path) -> None:
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if (name in SKIP_ON_CLONE or name in PER_BOOT or _process_state(name)
                or name.startswith(".")):  # atomic-write temps and other hidden work files
            continue
        source, target = Path(entry.path), dst / name
        if entry.is_symlink():
            _copy_link(src, source, target)
        elif entry.is_dir(follow_symlinks=False):
            if name == paths.SOCK_DIR:
                continue  # the sockets of a running boot's forwards
            shutil.copytree(source, target, symlinks=True, ignore=_ignore_process_state,
                            copy_function=_copy_file)
        elif entry.is_file(follow_symlinks=False):
            if name in NULLIFY_ON_CLONE:
                target.write_bytes(b"")
            else:
                _copy_file(str(source), str(target))
        # Sockets, fifos and devices are a running process's: not copied.


def _copy_link(src_dir: Path, link: Path, target: Path) -> None:
    """A relative link inside the directory (Lima 2's `disk -> diffdisk`) stays a link to
    the clone's own file; any other link is copied as the file it points to, as Lima does."""
    dest = os.readlink(link)
    inside = (src_dir / dest).resolve()
    if not os.path.isabs(dest) and inside.parent == src_dir.resolve():
        os.symlink(dest, target)
    else:
        _copy_file(str(link), str(target))


def _copy_file(source: str, target: str) -> str:
    clone_file(Path(source), Path(target))
    shutil.copymode(source, target)
    return target


def _ignore_process_state(directory: str, names: list[str]) -> set[str]:
    ignored = set()
    for n in names:
        try:
            mode = os.lstat(os.path.join(directory, n)).st_mode
        except OSError:
            continue
        if _process_state(n) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)
                                     or stat.S_ISLNK(mode)):
            ignored.add(n)
    return ignored


def qcow2_backing_name(disk: Path) -> str | None:
    """The backing file name written in a qcow2 header (None: no backing file, or not a
    qcow2), read directly: no process for the usual case."""
    try:
        with disk.open("rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != _QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", head[8:20])
            if not offset or not size or size > 4096:
                return None
            f.seek(offset)
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return None


def own_backing_file(inst: Path, src: Path) -> None:
    """A copied diffdisk that names the source's basedisk by its absolute path (an older
    Lima wrote such overlays) would read the source's disk: point it at the clone's own
    `basedisk` (`qemu-img rebase -u`: the header only, the bytes are the same)."""
    diffdisk = inst / paths.DIFFDISK
    if diffdisk.is_symlink() or not diffdisk.is_file():
        return
    backing = qcow2_backing_name(diffdisk)
    if backing is None or not os.path.isabs(backing):
        return  # limapy writes `basedisk`, resolved from the overlay's own directory
    if Path(backing).name != paths.BASEDISK or Path(backing).parent.resolve() != src.resolve():
        return  # not the source's: the boot's disk check refuses it by name
    from lima.drivers.images.imagecheck import qemu_img_info

    fmt = str(qemu_img_info(diffdisk).get("backing-filename-format") or "qcow2")
    runner.run(["qemu-img", "rebase", "-u", "-F", fmt, "-b", paths.BASEDISK, diffdisk])


def rename_instance(src: Path, name: str, lima_yaml: str | None = None) -> Path:
    """Move stopped instance `src` to `$LIMA_HOME/NAME` in one rename(2) (atomic: it is
    under one name or the other), then write `lima_yaml` (when given) as its lima.yaml and
    drop what the next boot makes for the new name and the stale process state."""
    final = instance_dir_for(name)
    if final.exists() or final.is_symlink():
        raise LimaError(f"instance `{name}` already exists")
    os.rename(src, final)
    if lima_yaml is not None:
        try:
            atomic_write(final / paths.LIMA_YAML, lima_yaml)
        except OSError as exc:  # the move stands; only the edit is missing
            raise LimaError(f"renamed to `{name}`, but its edited lima.yaml could not be "
                            f"written ({exc}); its lima.yaml is the old one") from None
    with os.scandir(final) as it:
        stale = [e.name for e in it if (e.name in PER_BOOT or _process_state(e.name))
                 and not e.is_dir(follow_symlinks=False)]
    for entry in stale:
        with contextlib.suppress(OSError):  # made again at the next boot in any case
            (final / entry).unlink()
    return final


def factory_reset(inst: Path) -> tuple[list[str], list[str]]:
    """Remove what `limactl factory-reset` removes (see the module docstring); return
    (removed, kept-because-limactl-did-not-make-them), sorted, directories with a `/`."""
    removed: list[str] = []
    kept: list[str] = []
    with os.scandir(inst) as it:
        entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    for entry, is_dir in entries:
        if entry in KEPT_ON_RESET or entry.endswith((".yaml", ".yml")):
            continue
        if is_dir:
            if entry == paths.SOCK_DIR and _only_sockets(inst / entry):
                shutil.rmtree(inst / entry)
                removed.append(entry + "/")
            else:
                kept.append(entry + "/")
            continue
        if not paths.is_known_instance_entry(entry):
            kept.append(entry)
            continue
        with contextlib.suppress(FileNotFoundError):
            (inst / entry).unlink()
        removed.append(entry)
    return removed, kept


def _only_sockets(directory: Path) -> bool:
    with os.scandir(directory) as it:
        return all(stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode) for e in it)
