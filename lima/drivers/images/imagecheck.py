"""Checks that a disk image is safe and usable before it becomes (or boots as) a basedisk.

Two callers: `disks.stage_image` checks every candidate's basedisk (downloaded, local
or built) after it is staged and before it is renamed into place, and the QEMU driver
calls `check_instance_disks` before it starts the host agent, so a basedisk damaged or
swapped after create fails at once with qemu-img's own words instead of as a qemu crash.

Why: a qcow2 image can name another file as its backing file or as its external data
file. qemu follows that name when it opens the image, so such a basedisk makes the guest
read (and for a data file, write) a host file of the image author's choosing, e.g.
/etc/shadow (Lima's CVE-2023-32684). Every fact comes from `qemu-img info -U
--output=json` on one file: without --backing-chain qemu-img opens no backing file (and
it does not open an external data file for `info` either), and -U lets it read an image
a running qemu holds locked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lima import paths
from lima.drivers import runner
from lima.errors import PermanentError

# qcow2 and raw are what Lima boots as a basedisk. Other formats qemu-img knows (vmdk
# with its extent files, vpc, vdi, qed, luks ...) carry their own ways of naming more
# files and are refused rather than audited one by one.
USABLE_FORMATS = ("qcow2", "raw")
# ISO 9660 volume descriptor: "CD001" at byte 0x8001 (an ISO basedisk boots as a CD).
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"
CVE = "CVE-2023-32684"


def is_iso(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(ISO_MAGIC_OFFSET)
            return f.read(len(ISO_MAGIC)) == ISO_MAGIC
    except OSError:
        return False


def qemu_img_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """`qemu-img info -U --output=json` of one file, never of its backing chain.

    `fmt` makes qemu-img open the file as that format instead of probing, so a file that
    is not one fails with qemu-img's own words. PermanentError when qemu-img cannot read
    it: the same bytes will fail the same way on a retry.
    """
    argv: list[str | Path] = ["qemu-img", "info", "-U", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    # Absolute: a relative name with a colon before its first slash would be read by
    # qemu as a protocol prefix (nbd:, http:, ...).
    argv.append(path.absolute())
    try:
        # check=False: a refusal is an expected answer here, reported below in qemu-img's
        # words, not a command failure for the runner to log as an error.
        result = runner.run(argv, check=False)
    except runner.CommandError as exc:  # could not run it at all
        if exc.returncode == 127:
            raise PermanentError("qemu-img not found: install QEMU "
                                 "(Debian: apt-get install qemu-utils)") from None
        raise PermanentError(f"{path}: {exc}") from None
    if result.returncode != 0:
        said = _qemu_img_words(result.stderr) or f"exit {result.returncode}"
        raise PermanentError(f"{path}: not a{' ' + fmt if fmt else ''} disk image qemu-img "
                             f"can open: {said} ({runner.shell_line(result.argv)})")
    try:
        info = json.loads(result.stdout)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise PermanentError(f"{path}: qemu-img info printed no JSON object")
    return info


def _qemu_img_words(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def host_files_named(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The other files an image makes qemu open: [(role, path)] from its `qemu-img info`."""
    found: list[tuple[str, str]] = []
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        found.append(("backing file", str(backing)))
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict):
        data_file = data.get("data-file")
        if data_file:
            found.append(("external data file", str(data_file)))
        extents = data.get("extents")  # vmdk: each extent is a file of its own
        if isinstance(extents, list):
            own = str(info.get("filename", ""))
            for extent in extents:
                name = extent.get("filename") if isinstance(extent, dict) else None
                if name and name != own:
                    found.append(("extent file", str(name)))
    return found


def check_base_image(path: Path, what: str) -> dict[str, Any]:
    """Refuse an image that names other host files or is not qcow2/raw; return its info.

    `what` names the image for the user (its location in lima.yaml). An ISO passes: it
    is attached read-only as a CD and qemu reads nothing else for it. PermanentError:
    the same image is refused again on every retry.
    """
    info = qemu_img_info(path)
    refused = host_files_named(info)
    if refused:
        role, host_path = refused[0]
        raise PermanentError(
            f"{what}: refusing this image: it names the host file {host_path} as its "
            f"{role}, so the guest would read that host file as its disk ({CVE}). "
            f"Use a self-contained image: `qemu-img convert -O qcow2 IMAGE NEW.qcow2` "
            f"makes one"
        )
    fmt = str(info.get("format", ""))
    if fmt not in USABLE_FORMATS:
        raise PermanentError(
            f"{what}: refusing this image: qemu-img sees format {fmt or 'unknown'!r}; "
            f"a base disk must be {' or '.join(USABLE_FORMATS)} "
            f"(`qemu-img convert -O qcow2 IMAGE NEW.qcow2` converts it)"
        )
    return info


def check_instance_disks(inst_dir: Path) -> None:
    """Before a boot: diffdisk is a qcow2 whose only backing file is this instance's
    basedisk, opened as the format diffdisk records, and that basedisk is safe as above.

    A damaged basedisk (overwritten, truncated, swapped) thus fails here with qemu-img's
    words and the file's name, permanently, instead of as a qemu that exits at once and
    a host agent that is retried. About 15 ms (two or three qemu-img runs).
    """
    from lima.drivers.disklayout import lima2_disk

    lima_disk = lima2_disk(inst_dir)
    if lima_disk is not None:
        _check_lima2_disk(lima_disk)
        return
    basedisk = inst_dir / paths.BASEDISK
    diffdisk = inst_dir / paths.DIFFDISK
    for disk in (basedisk, diffdisk):
        if not disk.is_file():
            raise PermanentError(f"{disk} is missing: the instance's disks are incomplete; "
                                 f"delete the instance and create it again")
    diff = qemu_img_info(diffdisk)
    if diff.get("format") != "qcow2":
        raise PermanentError(f"{diffdisk}: qemu-img sees format {diff.get('format')!r}, "
                             f"not the qcow2 overlay limactl made")
    named = host_files_named(diff)
    backing = diff.get("full-backing-filename") or diff.get("backing-filename")
    others = [(role, p) for role, p in named
              if not (role == "backing file" and _same_file(inst_dir, str(p), basedisk))]
    if others:
        role, host_path = others[0]
        raise PermanentError(f"{diffdisk}: refusing to boot: it names the host file "
                             f"{host_path} as its {role}; only {basedisk} may back it")
    if backing is None:
        if not is_iso(basedisk):
            # Booted as it is, diffdisk would hide basedisk entirely: not what create made.
            raise PermanentError(f"{diffdisk}: has no backing file, but {basedisk} is not an "
                                 f"ISO: the instance's disks do not belong together")
        return
    fmt = diff.get("backing-filename-format")
    what = f"{basedisk} (the backing file of {diffdisk.name})"
    if isinstance(fmt, str) and fmt:
        # Opened as diffdisk says qemu will open it: a basedisk that is not (any more)
        # in that format fails here with qemu-img's "Image is not in qcow2 format".
        try:
            opened = qemu_img_info(basedisk, fmt)
        except PermanentError as exc:
            raise PermanentError(
                f"{exc}\n{diffdisk.name} opens {basedisk.name} as {fmt}: the base disk was "
                f"changed after create; restore it, or delete the instance and create it "
                f"again") from None
        refused = host_files_named(opened)
        if refused:
            role, host_path = refused[0]
            raise PermanentError(f"{what}: refusing to boot: it names the host file "
                                 f"{host_path} as its {role} ({CVE})")
        if fmt not in USABLE_FORMATS:
            raise PermanentError(f"{what}: diffdisk opens it as {fmt!r}; a base disk must "
                                 f"be {' or '.join(USABLE_FORMATS)}")
        return
    check_base_image(basedisk, what)


def _same_file(inst_dir: Path, name: str, target: Path) -> bool:
    # A relative backing name is resolved from diffdisk's directory, as qemu does.
    candidate = Path(name) if Path(name).is_absolute() else inst_dir / name
    try:
        return candidate.resolve() == target.resolve()
    except OSError:
        return False


def lima2_disk_format(disk: Path) -> str:
    """The format of Lima 2's `disk` as qemu-img sees it: "qcow2" or "raw" (PermanentError
    for anything else), so QEMU is told it rather than left to probe."""
    fmt = qemu_img_info(disk).get("format")
    if fmt not in ("qcow2", "raw"):
        raise PermanentError(f"{disk}: qemu-img sees format {fmt!r}; Lima's disk is qcow2 "
                             f"or raw")
    return str(fmt)


def _check_lima2_disk(disk: Path) -> None:
    """Lima 2's `disk` (the whole boot disk): a file of the instance directory (Lima's
    only symlink, `disk -> diffdisk`, is limapy's own layout), qcow2 or raw, naming no
    host file."""
    if disk.is_symlink():
        raise PermanentError(f"{disk}: refusing to boot: it is a symbolic link to "
                             f"{os.readlink(disk)}, not the instance's own disk")
    lima2_disk_format(disk)
    named = host_files_named(qemu_img_info(disk))
    if named:
        role, host_path = named[0]
        raise PermanentError(f"{disk}: refusing to boot: it names the host file {host_path} "
                             f"as its {role}")
