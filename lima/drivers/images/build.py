"""Images built on this machine from Debian packages: the `build:NAME` image locations.

The images layer (prepare_disks) calls `build_image(name)` when an `images[]` location is
`build:NAME`; it returns the cached product (qcow2 + kernel + initrd + cmdline), building it
first when the cache has none for the recipe's current inputs. The recipes themselves live in
build_tiny.py and build_debian.py; this module owns what they share: the cache entry, its
lock, the progress lines, the build log, tool checks and the apt helpers.

Cache layout: cache_dir()/build/<recipe>-<key>/{image.qcow2,kernel,initrd,cmdline,build.log,
sha256sums,verified.json,done}, where key is a short sha256 of the recipe's inputs and `done` is
written last.
A build runs in a temporary directory beside it and is renamed into place, under a flock, so two
concurrent builds of one recipe produce one build.

An entry is immutable once done: its products are made read-only and their sha256 recorded in
`sha256sums` (the format `sha256sum -c` reads). A cache hit re-hashes them (about 0.13 s per
124 MiB here) unless no file was written since they last matched (`verified.json`: each file's
stat, ctime included, which any write moves on), and an entry that no longer matches is built
again instead of used: instances get copies (see disks.clone_file), so a change can only come
from outside, and as root a 0444 mode does not stop it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from lima import paths
from lima.drivers import runner
from lima.errors import PermanentError
from lima.fsutil import atomic_write, file_stamp

log = logging.getLogger(__name__)

IMAGE = "image.qcow2"
KERNEL = "kernel"
INITRD = "initrd"
# The initrd of boots paused early (lima.drivers.boottemplate): INITRD and more (build:debian-12
# adds its copy of cloud-init's import). Other boots, and other programs, boot INITRD.
INITRD_EARLY = "initrd.early"
CMDLINE = "cmdline"
BUILD_LOG = "build.log"
SHA256SUMS = "sha256sums"
# Each product's (and sha256sums') stat when its bytes last matched sha256sums: an entry
# whose files are all still so is not hashed again (0.3 s of each create for the Debian
# image). Any write changes a file's ctime, which no user can set back.
VERIFIED = "verified.json"
# A file changed within this long of the stamp's recording could share its timestamps
# (they are coarse, a few ms): such a stamp is not written, as git does for a racy index.
RACY_NS = 2_000_000_000
DONE = "done"
# What an instance gets from an entry, so what sha256sums covers.
PRODUCTS = (IMAGE, KERNEL, INITRD, INITRD_EARLY, CMDLINE)

# The Debian cloud kernel: virtio built as modules, small, no 9p (fine for now).
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class BuiltImage:
    """A finished build: what prepare_disks copies into an instance directory."""

    image: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str | None
    initrd_early: Path | None = None
    # The image's sha256 as sha256sums has it, when its bytes were just checked against it,
    # and the image's stat then (a copy made while it is unchanged has that digest).
    image_sha256: str | None = None
    image_stamp: tuple[int, ...] | None = None

    def unchanged_sha256(self) -> str | None:
        """The image's checked sha256 while the image is still as it was when checked (a
        copy just made has those bytes), else None."""
        if self.image_sha256 is None or self.image_stamp is None:
            return None
        try:
            now = tuple(file_stamp(self.image))
        except OSError:
            return None
        return self.image_sha256 if now == self.image_stamp else None


class Recipe(Protocol):
    """One way of building an image; see build_tiny.TinyRecipe and build_debian.DebianRecipe."""

    name: str
    # (executable, Debian package that provides it)
    tools: tuple[tuple[str, str], ...]
    needs_root: bool

    def inputs(self) -> Mapping[str, object]:
        """Everything the product depends on; hashed into the cache key. Must be cheap."""
        ...

    def build(self, ctx: BuildContext) -> None:
        """Write image.qcow2, kernel, initrd and cmdline into ctx.workdir."""
        ...


def _recipes() -> dict[str, Recipe]:
    # Imported here: the recipe modules import this one for its helpers.
    from lima.drivers.images.build_debian import DebianRecipe
    from lima.drivers.images.build_tiny import TinyRecipe

    return {"debian-12": DebianRecipe(), "tiny": TinyRecipe()}


def recipe_names() -> list[str]:
    return sorted(_recipes())


def build_root() -> Path:
    return paths.cache_dir() / "build"


def debs_dir() -> Path:
    """Downloaded .debs shared by every recipe and kept between builds."""
    return build_root() / "debs"


class BuildContext:
    """What a recipe sees while it builds: its work dir, the log, progress and a runner."""

    def __init__(self, recipe: str, workdir: Path, log: IO[str], progress: bool) -> None:
        self.recipe = recipe
        self.workdir = workdir
        self.log = log
        self.progress = progress
        self.failed_log = build_root() / f"{recipe}-failed.log"
        self._started = time.monotonic()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One phase: `build:NAME: what ... 12.3 s` on stderr, and a header in the log."""
        self.log.write(f"\n=== {what}\n")
        self.log.flush()
        if self.progress:
            print(f"build:{self.recipe}: {what} ...", end="", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            secs = time.monotonic() - t0
            self.log.write(f"=== {what}: {'done' if ok else 'FAILED'} in {secs:.1f} s\n")
            self.log.flush()
            if self.progress:
                print(f" {secs:.1f} s" if ok else " failed", file=sys.stderr, flush=True)

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 1800,
        input: str | None = None,
    ) -> runner.Result:
        """Run a build command, keep its output in build.log, fail with a pointer to it."""
        self.log.write(f"$ {runner.shell_line([str(a) for a in argv], env)}\n")
        self.log.flush()
        try:
            res = runner.run(argv, check=False, cwd=cwd, env=env, timeout=timeout, input=input)
        except runner.CommandError as exc:
            self.log.write(f"{exc}\n")
            raise PermanentError(
                f"build:{self.recipe}: {exc}\nfull log: {self.failed_log}"
            ) from exc
        if res.stdout:
            self.log.write(res.stdout if res.stdout.endswith("\n") else res.stdout + "\n")
        if res.stderr:
            self.log.write(res.stderr if res.stderr.endswith("\n") else res.stderr + "\n")
        self.log.flush()
        if res.returncode != 0:
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-8:])
            raise PermanentError(
                f"build:{self.recipe}: command failed (exit {res.returncode}): "
                f"{runner.shell_line(res.argv, env)}\n{tail}\nfull log: {self.failed_log}"
            )
        return res

    def elapsed(self) -> float:
        return time.monotonic() - self._started


# -- apt helpers shared by the recipes ------------------------------------------------------

# apt-get as root drops to the `_apt` user, which cannot write into root's cache dir.
APT_OPTS = ("-o", "APT::Sandbox::User=root", "-q")


def apt_candidates(packages: Sequence[str]) -> dict[str, str]:
    """Candidate version of each package from the host's apt lists (no network)."""
    fields = apt_show([*packages, KERNEL_META_PACKAGE])
    return {p: fields[p]["version"] for p in packages}


def kernel_package(meta: str = KERNEL_META_PACKAGE) -> tuple[str, str]:
    """The versioned kernel package a meta package (default: the cloud kernel's) points
    at: (name, version)."""
    depends = apt_show([meta])[meta].get("depends", "")
    for dep in depends.split(","):
        m = re.match(r"\s*(linux-image-\S+)\s*\(=\s*([^)\s]+)\)", dep)
        if m:
            return m.group(1), m.group(2)
    raise PermanentError(f"cannot tell which kernel {meta} depends on")


_APT_SHOW: dict[str, dict[str, str]] = {}
_APT_STAMP: list[str] = []  # the apt lists' stamp _APT_SHOW belongs to
_APT_FIELDS = ("package", "version", "depends", "architecture")


def apt_show(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    """`apt-cache show` of the candidates, as {package: {lowercase field: value}}.

    One apt-cache call costs about 0.6 s here, and a cache hit in build_image needs the
    versions for its key: the answers are kept, in memory and in build/apt-show.json,
    until the apt lists change (`apt-get update`).
    """
    stamp = _apt_lists_stamp()
    if [stamp] != _APT_STAMP:
        _APT_SHOW.clear()
        _APT_STAMP[:] = [stamp]
        _APT_SHOW.update(_load_apt_memo(stamp))
    wanted = [p for p in packages if p not in _APT_SHOW]
    if wanted:
        res = runner.run(["apt-cache", "show", "--no-all-versions", *wanted], check=False)
        for stanza in res.stdout.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(" "):
                    k, v = line.split(":", 1)
                    if k.strip().lower() in _APT_FIELDS:
                        fields[k.strip().lower()] = v.strip()
            if "package" in fields and "version" in fields:
                _APT_SHOW.setdefault(fields["package"], fields)
        _save_apt_memo(stamp)
    missing = [p for p in packages if p not in _APT_SHOW]
    if missing:
        raise PermanentError(
            f"apt knows no package {', '.join(missing)}: run `apt-get update` "
            "(images are built from this machine's configured Debian mirror)"
        )
    return {p: _APT_SHOW[p] for p in packages}


def _apt_lists_stamp() -> str:
    try:
        st = Path("/var/lib/apt/lists").stat()
        return f"{st.st_mtime_ns}:{st.st_ino}"
    except OSError:
        return ""


def _load_apt_memo(stamp: str) -> dict[str, dict[str, str]]:
    try:
        memo = json.loads((build_root() / "apt-show.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(memo, dict) or memo.get("stamp") != stamp:
        return {}
    packages = memo.get("packages")
    return packages if isinstance(packages, dict) else {}


def _save_apt_memo(stamp: str) -> None:
    path = build_root() / "apt-show.json"
    with contextlib.suppress(OSError):  # a memo we cannot write only costs an apt-cache run
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"stamp": stamp, "packages": _APT_SHOW}), sync=False)


def kernel_release(kernel_pkg: str) -> str:
    """linux-image-6.1.0-56-cloud-amd64 -> 6.1.0-56-cloud-amd64 (the modules directory)."""
    return kernel_pkg.removeprefix("linux-image-")


def deb_file_name(name: str, version: str, arch: str = "amd64") -> str:
    """The file name `apt-get download` gives a package (epoch colon quoted as %3a)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def fetch_debs(ctx: BuildContext, versions: Mapping[str, str]) -> dict[str, Path]:
    """Download the named package versions into debs_dir() unless already there."""
    dest = debs_dir()
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    wanted: list[str] = []
    for name, version in versions.items():
        hits = [dest / deb_file_name(name, version, arch) for arch in ("amd64", "all")]
        hit = next((p for p in hits if p.exists()), None)
        if hit:
            found[name] = hit
        else:
            wanted.append(f"{name}={version}")
    if wanted:
        ctx.run(["apt-get", *APT_OPTS, "download", *wanted], cwd=dest)
    for name, version in versions.items():
        if name not in found:
            hits = [dest / deb_file_name(name, version, arch) for arch in ("amd64", "all")]
            hit = next((p for p in hits if p.exists()), None)
            if hit is None:
                raise PermanentError(f"build:{ctx.recipe}: apt-get download left no {name}")
            found[name] = hit
    return found


# -- checks ------------------------------------------------------------------------------


def check_tools(recipe: Recipe) -> None:
    """Every tool the recipe runs must exist; name the Debian packages that provide them."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [(tool, pkg) for tool, pkg in recipe.tools if shutil.which(tool, path=path) is None]
    if missing:
        tools = ", ".join(t for t, _ in missing)
        pkgs = " ".join(sorted({p for _, p in missing}))
        raise PermanentError(
            f"build:{recipe.name} needs {tools}: install them with `apt-get install {pkgs}`"
        )
    if recipe.needs_root and os.geteuid() != 0:
        raise PermanentError(
            f"build:{recipe.name} runs debootstrap and needs root: run the command as root "
            f"(e.g. `sudo limactl ...`) once to build the image; it is cached afterwards "
            f"under {build_root()}"
        )


# -- the cache entry -----------------------------------------------------------------------


def cache_key(inputs: Mapping[str, object]) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _product(entry: Path, stamps: dict[str, list[int]] | None = None) -> BuiltImage:
    """The entry's files; with `stamps` (their stat when their bytes matched sha256sums)
    also the image's digest and stat then."""
    def opt(name: str) -> Path | None:
        p = entry / name
        return p if p.exists() else None

    cmdline_file = entry / CMDLINE
    cmdline = cmdline_file.read_text().strip() if cmdline_file.exists() else None
    digest = stamp = None
    if stamps is not None and IMAGE in stamps:
        with contextlib.suppress(OSError):
            digest = _recorded_digests(entry).get(IMAGE)
            stamp = tuple(stamps[IMAGE])
    return BuiltImage(entry / IMAGE, opt(KERNEL), opt(INITRD), cmdline, opt(INITRD_EARLY),
                      digest, stamp)


def _recorded_digests(entry: Path) -> dict[str, str]:
    """sha256sums as {product: digest}; OSError when it cannot be read."""
    want: dict[str, str] = {}
    for line in (entry / SHA256SUMS).read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            want[name] = digest
    return want


def _stamps(entry: Path) -> dict[str, list[int]]:
    """The stamp of sha256sums and of each product there is."""
    out = {}
    for name in (SHA256SUMS, *PRODUCTS):
        with contextlib.suppress(FileNotFoundError):
            out[name] = file_stamp(entry / name)
    return out


def _unchanged_since_verified(entry: Path) -> dict[str, list[int]] | None:
    """The files' stamps when every file is as it was when its bytes last matched
    sha256sums, else None."""
    try:
        data = json.loads((entry / VERIFIED).read_text())
        stamps = _stamps(entry)
    except (OSError, ValueError):
        return None
    return stamps if isinstance(data, dict) and data.get("files") == stamps else None


def _record_verified(entry: Path, before: dict[str, list[int]]) -> dict[str, list[int]] | None:
    """Write VERIFIED for files whose bytes were just found to match sha256sums, `before`
    being their stamps from before they were read: only when no file changed since then
    (a change during the hashing) nor shortly before (a later change could share its
    timestamps), and not in a cache we may not write. Returns the stamps it vouches for."""
    try:
        stamps = _stamps(entry)
    except OSError:
        return None
    now = time.time_ns()
    if stamps != before or any(now - stamp[4] < RACY_NS for stamp in stamps.values()):
        return None
    with contextlib.suppress(OSError):
        atomic_write(entry / VERIFIED, json.dumps({"files": stamps}) + "\n")
    return stamps


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def seal_entry(entry: Path) -> None:
    """Make an entry's products read-only and record their sha256 in sha256sums."""
    lines = []
    for name in PRODUCTS:
        path = entry / name
        if path.is_file():
            path.chmod(0o444)
            lines.append(f"{_sha256(path)}  {name}\n")
    atomic_write(entry / SHA256SUMS, "".join(lines))


def entry_problems(entry: Path) -> list[str]:
    """How an entry's products differ from its sha256sums ([] when they all match)."""
    try:
        want = _recorded_digests(entry)
    except OSError as exc:
        return [f"{SHA256SUMS}: {exc.strerror or exc}"]
    problems = []
    for name in PRODUCTS:
        path = entry / name
        if name not in want:
            if path.exists():
                problems.append(f"{name} is not in {SHA256SUMS}")
            continue
        try:
            got = _sha256(path)
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror or exc}")
            continue
        if got != want[name]:
            problems.append(f"{name} has sha256 {got}, built as {want[name]}")
    return problems


def _checked_product(entry: Path) -> BuiltImage | None:
    """The entry's product when it still is what was built, else None (to build again).

    An entry from before sha256sums existed is sealed as it is now, once.
    """
    if not (entry / SHA256SUMS).exists():
        log.info("%s: recording the sha256 of its products (an entry from an older limapy)",
                 entry)
        try:
            seal_entry(entry)
        except OSError as exc:
            # A cache we may not write (another user's): nor may our instances, and a
            # rebuild could not be written either.
            log.warning("%s: cannot record its digests (%s): using it unverified", entry, exc)
        return _product(entry)
    stamps = _unchanged_since_verified(entry)
    if stamps is not None:
        return _product(entry, stamps)
    try:
        before = _stamps(entry)
    except OSError:
        before = {}
    problems = entry_problems(entry)
    if problems:
        log.warning("%s was changed after it was built (%s): building it again",
                    entry, "; ".join(problems))
        return None
    return _product(entry, _record_verified(entry, before))


def cached_image(name: str) -> BuiltImage | None:
    """The finished build for the recipe's current inputs, without building (None when
    there is none, or it no longer matches its digests)."""
    recipe = _recipe(name)
    entry = build_root() / f"{name}-{cache_key(recipe.inputs())}"
    return _checked_product(entry) if (entry / DONE).exists() else None


def _recipe(name: str) -> Recipe:
    recipes = _recipes()
    if name not in recipes:
        raise PermanentError(
            f"unknown image recipe build:{name}; known recipes: "
            + ", ".join(f"build:{n}" for n in sorted(recipes))
        )
    return recipes[name]


def build_image(name: str, *, progress: bool = True) -> BuiltImage:
    """The image `build:NAME` stands for, building it once per set of inputs."""
    recipe = _recipe(name)
    key = cache_key(recipe.inputs())
    root = build_root()
    entry = root / f"{name}-{key}"
    if (entry / DONE).exists():
        product = _checked_product(entry)
        if product is not None:
            return product
    check_tools(recipe)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}-{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"build:{name}: waiting for another build of it ...", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(recipe, entry, progress)


def _build_locked(recipe: Recipe, entry: Path, progress: bool) -> BuiltImage:
    if (entry / DONE).exists():  # another process built it while we waited
        product = _checked_product(entry)
        if product is not None:
            return product
    remove_tree(entry)  # a half-written entry without `done`, or a changed one
    work = entry.parent / f".tmp-{entry.name}-{os.getpid()}"
    remove_tree(work)
    work.mkdir(parents=True)
    log_path = work / BUILD_LOG
    with open(log_path, "w") as log:
        ctx = BuildContext(recipe.name, work, log, progress)
        try:
            log.write(f"build:{recipe.name} inputs: {json.dumps(recipe.inputs(), default=str)}\n")
            recipe.build(ctx)
            for required in (IMAGE,):
                if not (work / required).exists():
                    raise PermanentError(f"build:{recipe.name}: the recipe wrote no {required}")
            log.write(f"total: {ctx.elapsed():.1f} s\n")
        except BaseException:
            log.flush()
            with contextlib.suppress(OSError):
                shutil.copyfile(log_path, ctx.failed_log)
            remove_tree(work)
            raise
    if progress:
        print(f"build:{recipe.name}: done in {ctx.elapsed():.0f} s", file=sys.stderr)
    seal_entry(work)
    (work / DONE).write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    os.rename(work, entry)
    _remove_superseded(recipe.name, entry)
    return _product(entry)


def _remove_superseded(recipe: str, keep: Path) -> None:
    """Drop older builds of the recipe (instances hold their own copies).

    An entry whose lock someone holds is being used or rebuilt right now: left alone.
    """
    for old in build_root().glob(f"{recipe}-*"):
        if old == keep or not old.is_dir() or not (old / DONE).exists():
            continue
        lock_path = old.with_name(old.name + ".lock")
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            remove_tree(old)
        lock_path.unlink(missing_ok=True)


# -- safe removal --------------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1:
                mnt = fields[1].replace("\\040", " ")
                if mnt.startswith(prefix):
                    found.append(mnt)
    return found


def remove_tree(path: Path) -> None:
    """rmtree that first detaches anything mounted inside (a chroot's /proc, /dev...).

    Deleting through a bind mount of the host's /dev would delete the host's device nodes,
    so a tree that still has mounts after unmounting is left alone.
    """
    if not path.exists() and not path.is_symlink():
        return
    for mnt in sorted(_mounts_under(path), key=len, reverse=True):
        runner.run(["umount", "-l", mnt], check=False)
    left = _mounts_under(path)
    if left:
        raise PermanentError(f"cannot remove {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)
