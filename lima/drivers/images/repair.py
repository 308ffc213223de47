"""Disks that went missing from an existing instance: made again when nothing is lost by
it, else a PermanentError that says what is gone and what the user can do.

The QEMU driver's CreateInstance step calls `repair_disks` for an instance directory that
has its lima.yaml but lacks basedisk or diffdisk. The rules, by what is missing:

- diffdisk, on an instance that has booted: the guest's disk, i.e. the user's data, is
  gone. A new, blank diffdisk would boot a fresh system in its place without a word, so
  this is a permanent error (put a copy back, or delete the instance and start over).
- diffdisk, on an instance that never booted: nothing of the user's was on it; the disks
  are prepared again as at create.
- basedisk only: diffdisk holds only the blocks the guest changed and reads every other
  block from basedisk. A fresh copy of the image may take its place only when its bytes
  are the ones diffdisk was created on (basedisk.json, see `baserecord`); then it is put
  back with a warning, else a permanent error names both files.

A directory laid out by Lima 2 (`disk`, see lima.drivers.disklayout) has nothing to
repair; one where Lima 2 downloaded `image` but made no `disk` yet gets it made from that
image, as Lima would (`adopt_lima_image`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lima import paths
from lima.drivers import procs, runner
from lima.drivers.disklayout import LIMA_DISK, LIMA_IMAGE, LIMA_ISO, lima2_disk
from lima.drivers.images.baserecord import BaseRecord, digest_file, read_record
from lima.drivers.images.disks import Staged, candidates, prepare_disks, stage_image
from lima.drivers.images.imagecheck import check_base_image, is_iso
from lima.errors import LimaError, PermanentError
from lima.schemas.spec import InstanceSpec

log = logging.getLogger(__name__)

# Files that exist only once an instance has been booted (or a boot was prepared): the
# seed of a boot, and the host agent's and the serial console's logs.
_BOOT_TRACES = (paths.CIDATA_META, paths.CIDATA_ISO, paths.HA_STDOUT, paths.SERIAL_LOG)


def has_booted(inst_dir: Path) -> bool:
    """Whether the instance was ever booted (so its diffdisk may hold the user's data)."""
    return any((inst_dir / trace).exists() for trace in _BOOT_TRACES)


def repair_disks(spec: InstanceSpec, inst_dir: Path) -> None:
    """Make the instance's missing disks again if no data is lost by that (see the module
    docstring); PermanentError otherwise. Nothing to do when both are there."""
    if lima2_disk(inst_dir) is not None:
        return  # made by Lima 2: its `disk` is the whole disk, nothing to make
    if (inst_dir / LIMA_IMAGE).is_file() and not (inst_dir / paths.DIFFDISK).exists():
        adopt_lima_image(inst_dir, spec.disk)
        return
    name = inst_dir.name
    base, diff = inst_dir / paths.BASEDISK, inst_dir / paths.DIFFDISK
    has_base, has_diff = base.exists(), diff.exists()
    if has_base and has_diff:
        return
    if not has_diff:
        if has_booted(inst_dir):
            raise PermanentError(_data_gone(name, inst_dir, diff))
        log.debug("%s: %s is missing on a never booted instance: preparing the disks again",
                  name, diff)
        prepare_disks(spec, inst_dir)
        return
    restore_basedisk(spec, inst_dir)


def adopt_lima_image(inst_dir: Path, size: int) -> None:
    """Lima 2 downloaded `image` but stopped before making its disk: finish as Lima does
    (an ISO becomes `iso` beside a blank qcow2 `disk`, any other image becomes `disk`),
    after the checks every base image gets, rather than download another one beside it."""
    image = inst_dir / LIMA_IMAGE
    check_base_image(image, str(image))
    disk = inst_dir / LIMA_DISK
    if not is_iso(image):
        log.info("%s: using Lima's downloaded %s as its disk", inst_dir.name, image)
        os.rename(image, disk)
        return
    iso = inst_dir / LIMA_ISO
    os.rename(image, iso)
    tmp = inst_dir / f".{LIMA_DISK}.tmp"
    try:
        runner.run(["qemu-img", "create", "-f", "qcow2", tmp, str(size)])
        os.replace(tmp, disk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        os.rename(iso, image)
        raise


def _data_gone(name: str, inst_dir: Path, diff: Path) -> str:
    msg = (
        f"{diff} is missing: the disk of instance {name!r}, which holds everything its guest"
        f" wrote (the instance has booted before), is gone. limactl will not boot a blank disk"
        f" in its place. If you have a copy, put it back as {diff}; otherwise start over:"
        f" `limactl delete {name}`, then apply or create it again"
    )
    qemu = procs.qemu_pid(inst_dir)
    if qemu is not None:
        msg += (
            f". Its qemu (PID {qemu}) still has the deleted disk open: copy what you need out"
            f" of the guest (`limactl shell {name}`) before you stop it"
        )
    return msg


def restore_basedisk(spec: InstanceSpec, inst_dir: Path) -> None:
    """Put basedisk back from the first `images[]` candidate whose bytes are the recorded
    ones (PermanentError when none is, or when there is no record to compare with)."""
    base, diff = inst_dir / paths.BASEDISK, inst_dir / paths.DIFFDISK
    advice = (
        f"Put the original basedisk back as {base}, or start over (`limactl delete "
        f"{inst_dir.name}`, then apply again; the data in {diff.name} is lost then)"
    )
    record = read_record(inst_dir)
    if record is None:
        raise PermanentError(
            f"{base} is missing, and {diff} (the instance's data) is laid over it. There is"
            f" no {paths.BASEDISK_RECORD} saying which bytes it was, so a fresh copy of the"
            f" image cannot be proven to be the same. {advice}"
        )
    tried: list[str] = []
    for image in candidates(spec):
        staged = Staged()
        try:
            stage_image(image, inst_dir, staged)
            got = digest_file(staged.files[paths.BASEDISK])
            if got != record:
                tried.append(f"{image.location}: different bytes ({got.short()})")
                continue
            _place(staged, inst_dir)
        except (LimaError, OSError) as exc:
            tried.append(f"{image.location}: {_first_line(exc)}")
            continue
        finally:
            staged.discard()
        log.warning(
            "%s was missing; prepared it again from %s: the same bytes %s was created on (%s)",
            base, image.location, diff.name, record.short(),
        )
        return
    raise PermanentError(_mismatch(base, diff, record, tried, advice))


def _place(staged: Staged, inst_dir: Path) -> None:
    """basedisk takes its name; kernel, initrd and kernel.cmdline only where missing (the
    ones there are what the guest has booted with)."""
    for name, tmp in staged.files.items():
        final = inst_dir / name
        if name == paths.BASEDISK or not final.exists():
            os.replace(tmp, final)


def _mismatch(base: Path, diff: Path, record: BaseRecord, tried: list[str], advice: str) -> str:
    lines = [
        f"{base} is missing, and {diff} (the instance's data) is laid over the basedisk it was"
        f" created on ({record.short()}). No image of images[] gives those bytes now, and"
        f" {diff.name} over other bytes would read as a corrupt disk:",
        *(f"  - {t}" for t in tried or ["images[] has no image for this arch"]),
        advice,
    ]
    return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.split("\n", 1)[0]
