"""An instance's disks: `basedisk` + `diffdisk`, and `kernel`/`kernel.cmdline`/`initrd`.

Called by the driver when an instance is created (`prepare_disks`). Picks the first
`images[]` candidate for the instance's arch that can be had (download cache, local
file, or `build:NAME` from `lima.drivers.images.build`), stages its files under
temporary names, checks the staged basedisk (`imagecheck`: no backing or data file
naming a host file, qcow2 or raw), renames them into place, then lays the qcow2 overlay
`diffdisk` over `basedisk` with qemu-img. On failure nothing it wrote is left behind.

Every file an instance gets is its own inode (a reflink or a copy), never a hard link
into a cache: see `clone_file`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lima import paths
from lima.drivers import runner
from lima.drivers.images import decompress, download
from lima.drivers.images.baserecord import record_basedisk
from lima.drivers.images.imagecheck import check_base_image, is_iso, qemu_img_info
from lima.errors import LimaError, PermanentError, TemporaryError
from lima.schemas.spec import Image, InstanceSpec

log = logging.getLogger(__name__)

BUILD_SCHEME = "build:"
STAGE_SUFFIX = ".tmp"
# linux/fs.h FICLONE = _IOW(0x94, 9, int): share the source's extents copy-on-write.
FICLONE = 0x40049409


@dataclass
class Staged:
    """Files of one candidate under temporary names: final name -> staged path."""

    files: dict[str, Path] = field(default_factory=dict)
    # The basedisk's sha256 when it is a copy of bytes just checked against one (a built
    # image's sha256sums): basedisk.json need not hash it again.
    basedisk_sha256: str | None = None

    def path(self, inst_dir: Path, name: str) -> Path:
        tmp = inst_dir / f".{name}{STAGE_SUFFIX}"
        tmp.unlink(missing_ok=True)
        self.files[name] = tmp
        return tmp

    def discard(self) -> None:
        for tmp in self.files.values():
            tmp.unlink(missing_ok=True)


def candidates(spec: InstanceSpec) -> list[Image]:
    """The `images[]` entries usable for this instance, in the order written: those for
    its arch of the variant the first of them names (Lima >= 2.2: a `minimal` image is
    never the fallback of a `server` one; `limactl --image-variant` filters the list)."""
    for_arch = [img for img in spec.images if img.arch == spec.arch]
    if not for_arch:
        return []
    variant = for_arch[0].variant or None
    return [img for img in for_arch if (img.variant or None) == variant]


def prepare_disks(spec: InstanceSpec, inst_dir: Path) -> None:
    """Write basedisk, diffdisk and (when the image has them) kernel, kernel.cmdline, initrd.

    Idempotent: an existing diffdisk means the disks are ready. Raises PermanentError
    (or TemporaryError when some candidate may work on a retry) listing every
    candidate and why it failed.
    """
    from lima.drivers.disklayout import lima2_disk

    diffdisk = inst_dir / paths.DIFFDISK
    if diffdisk.exists() or lima2_disk(inst_dir) is not None:
        log.debug("%s: disks already prepared", inst_dir)
        return
    inst_dir.mkdir(parents=True, exist_ok=True)
    images = candidates(spec)
    if not images:
        arches = sorted({img.arch for img in spec.images})
        raise PermanentError(f"images: no image for arch {spec.arch} "
                             f"(images[] has {', '.join(arches) or 'none'})")
    # A crash may have left files of an earlier attempt without a diffdisk: start over.
    placed_names = [paths.BASEDISK, paths.KERNEL, paths.KERNEL_CMDLINE, paths.INITRD,
                    paths.INITRD_EARLY]
    for name in placed_names:
        (inst_dir / name).unlink(missing_ok=True)
    staged = _stage_first(images, inst_dir, spec.arch)
    try:
        for name, tmp in staged.files.items():
            os.replace(tmp, inst_dir / name)
        # Before diffdisk exists, so every diffdisk has it: what lets `repair` prove a
        # fresh copy of a lost basedisk to be the bytes diffdisk was laid over.
        record_basedisk(inst_dir, known_sha256=staged.basedisk_sha256)
        create_diffdisk(inst_dir, spec.disk)
    except BaseException:
        staged.discard()
        for name in placed_names:
            (inst_dir / name).unlink(missing_ok=True)
        raise


def _stage_first(images: list[Image], inst_dir: Path, arch: str) -> Staged:
    failures: list[tuple[str, LimaError | OSError]] = []
    for image in images:
        staged = Staged()
        try:
            stage_image(image, inst_dir, staged)
            if failures:
                log.info("using %s (after %d failed candidate(s))", image.location,
                         len(failures))
            return staged
        except (LimaError, OSError) as exc:
            staged.discard()
            log.warning("image candidate %s failed: %s", image.location, _reason(exc))
            failures.append((image.location, exc))
        except BaseException:
            staged.discard()
            raise
    raise _combined(arch, failures)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, LimaError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc).replace("\n", "\n    ")


def _combined(arch: str, failures: list[tuple[str, LimaError | OSError]]) -> LimaError:
    lines = [f"no image for arch {arch} could be prepared "
             f"({len(failures)} candidate{'s' if len(failures) != 1 else ''}):"]
    for location, exc in failures:
        reason = _reason(exc)
        # Most reasons already start with the location (`URL: HTTP 404`): not twice.
        lines.append(f"  - {reason}" if reason.startswith(location) else
                     f"  - {location}: {reason}")
    message = "\n".join(lines)
    temporary = [exc for _, exc in failures if isinstance(exc, TemporaryError)]
    if temporary:
        # One of them may work later: let the reconciler retry rather than stall.
        return TemporaryError(message, min(exc.delay for exc in temporary))
    return PermanentError(message)


def stage_image(image: Image, inst_dir: Path, staged: Staged) -> None:
    """Fetch one candidate's files into `staged` (nothing is in place yet)."""
    kernel_from_image: Path | None = None
    initrd_from_image: Path | None = None
    early_from_image: Path | None = None
    cmdline_from_image: str | None = None
    if image.location.startswith(BUILD_SCHEME):
        # Imported lazily: the builders pull in their own dependencies.
        from lima.drivers.images.build import build_image

        built = build_image(image.location[len(BUILD_SCHEME):])
        clone_file(built.image, staged.path(inst_dir, paths.BASEDISK))
        staged.basedisk_sha256 = built.unchanged_sha256()  # copied as the checked bytes
        kernel_from_image, initrd_from_image = built.kernel, built.initrd
        early_from_image = built.initrd_early
        cmdline_from_image = built.cmdline
    else:
        fetch_file(image.location, image.digest, staged.path(inst_dir, paths.BASEDISK),
                   expand=True, what="image")
    if image.kernel is not None:
        fetch_file(image.kernel.location, image.kernel.digest,
                   staged.path(inst_dir, paths.KERNEL), expand=False, what="kernel")
        cmdline_from_image = image.kernel.cmdline or cmdline_from_image
    elif kernel_from_image is not None:
        clone_file(kernel_from_image, staged.path(inst_dir, paths.KERNEL))
    if image.initrd is not None:
        fetch_file(image.initrd.location, image.initrd.digest,
                   staged.path(inst_dir, paths.INITRD), expand=False, what="initrd")
    elif initrd_from_image is not None:
        clone_file(initrd_from_image, staged.path(inst_dir, paths.INITRD))
        if early_from_image is not None:
            clone_file(early_from_image, staged.path(inst_dir, paths.INITRD_EARLY))
    if cmdline_from_image and paths.KERNEL in staged.files:
        staged.path(inst_dir, paths.KERNEL_CMDLINE).write_text(cmdline_from_image)
    # The staged bytes are what the instance will boot, whatever their source (cache,
    # local file, decompressed download): checked here, before anything takes its final
    # name, so a refused image leaves nothing behind.
    check_base_image(staged.files[paths.BASEDISK], image.location)


def fetch_file(location: str, digest: str | None, dst: Path, *, expand: bool,
               what: str) -> None:
    """Put the file `location` names at `dst`, digest-checked; `expand` decompresses."""
    description = f"the {what} {location}"
    if download.is_local(location):
        src = download.local_path(location)
        if not src.is_file():
            raise PermanentError(f"{location}: no such file")
        kind = decompress.detect(src, location) if expand else None
        if kind is None:
            download.copy_verified(src, dst, digest=digest, description=description)
            return
        if digest:
            download.check_digest(location, digest,
                                  download.hash_file(src, [download.parse_digest(digest)[0]]))
        decompress.decompress(src, dst, kind, description=description)
        return
    fetched = download.download(location, digest=digest, description=description)
    kind = decompress.detect(fetched.path, location) if expand else None
    if kind is not None:
        decompress.decompress(fetched.path, dst, kind, description=description)
    else:
        clone_file(fetched.path, dst)


def clone_file(src: Path, dst: Path) -> None:
    """Give `dst` the bytes of `src` in an inode of its own: a reflink where the
    filesystem shares extents (btrfs, xfs), else a sparse copy.

    Never a hard link, not even for the read-only kernel and initrd: a link shares the
    inode, so a write, truncate or chmod through the instance's name (a user, `qemu-img
    commit` into the backing file, a bug) would change the cache for every later
    instance, and as root (how these machines run) a 0444 mode stops no write. qemu
    opens basedisk read-only as diffdisk's backing file, but that protects only the
    running guest. The price (benchmarks/image_cache.py): one copy per create, about
    0.1-0.2 s for build:debian-12's 143 MiB on ext4 (no reflink there), and the disk
    space, as in Lima, which also copies the cached image into the instance.
    """
    dst.unlink(missing_ok=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL,
                                 errno.EPERM, errno.ENOSYS):
                raise
            log.debug("cannot reflink %s (%s): copying", src, exc.strerror)
    _copy_sparse(src, dst)


def _copy_sparse(src: Path, dst: Path) -> None:
    """Copy only the data extents of `src` (SEEK_DATA/SEEK_HOLE), in the kernel."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        ifd, ofd = fin.fileno(), fout.fileno()
        pos = 0
        try:
            while pos < size:
                try:
                    start = os.lseek(ifd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole remains
                        break
                    raise
                end = os.lseek(ifd, start, os.SEEK_HOLE)
                _copy_range(ifd, ofd, start, end)
                pos = end
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            fout.seek(0)
            fout.truncate()
            fin.seek(0)
            shutil.copyfileobj(fin, fout, 1 << 20)  # no SEEK_DATA / copy_file_range here
        fout.truncate(size)


def _copy_range(ifd: int, ofd: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        n = os.copy_file_range(ifd, ofd, end - offset, offset, offset)
        if n == 0:
            raise OSError(errno.EIO, "short copy")
        offset += n


def create_diffdisk(inst_dir: Path, size: int) -> None:
    """`diffdisk`: a qcow2 overlay on basedisk, at least `size` bytes (never smaller than
    the base). An ISO basedisk boots as a CD, so its diffdisk is a blank qcow2."""
    basedisk = (inst_dir / paths.BASEDISK).absolute()
    tmp = inst_dir / f".{paths.DIFFDISK}{STAGE_SUFFIX}"
    tmp.unlink(missing_ok=True)
    if is_iso(basedisk):
        argv: list[str | Path] = ["qemu-img", "create", "-f", "qcow2", tmp, str(size)]
    else:
        info = qemu_img_info(basedisk)
        fmt = str(info.get("format", "raw"))
        virtual = int(info.get("virtual-size", 0))
        # A relative backing name (resolved from diffdisk's own directory): the instance
        # is assembled in a temporary directory and renamed into place, and LIMA_HOME may
        # move later.
        argv = ["qemu-img", "create", "-f", "qcow2", "-F", fmt, "-b", paths.BASEDISK, tmp,
                str(max(size, virtual))]
    try:
        runner.run(argv)
        os.replace(tmp, inst_dir / paths.DIFFDISK)
    except runner.CommandError as exc:
        tmp.unlink(missing_ok=True)
        raise PermanentError(f"cannot create diffdisk: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

