"""Recipe `build:tiny`: an initramfs-only guest that reaches an ssh login in seconds.

Called by build.build_image("tiny"). Made from Debian packages fetched with `apt-get
download` and unpacked with `dpkg-deb -x` (no root, nothing installed on the host):
busybox-static, dropbear and the libraries it links, the cloud kernel and a handful of its
modules. Its /init (lima/assets/tiny/init) mounts the cidata ISO, creates the user from
user-data, starts dropbear and runs boot.sh; see that script for what differs from a real
guest. The product: kernel, initrd (a gzip'd cpio written here), an empty qcow2 base disk
(so the instance has basedisk/diffdisk as usual) and the kernel command line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lima.drivers.images import build
from lima.errors import PermanentError

# Part of the cache key: bump it whenever a change here alters the product.
RECIPE_VERSION = "tiny-5"
USER_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
    "libcrypt1",
    "libc6",
    # sftp-server: OpenSSH's scp (limactl copy) speaks SFTP; dropbear runs it from
    # /usr/lib/sftp-server, as Debian's package links it.
    "openssh-sftp-server",
)
# Module names; their dependencies come along. button+evdev: acpid sees the power button.
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "sr_mod",
    "isofs",
    "virtio_console",
    "virtio_rng",
    "button",
    "evdev",
    # mountType virtiofs (the cloud kernel has no 9p); fuse comes along as its dependency.
    "virtiofs",
)
BINARIES = ("usr/sbin/dropbear", "usr/bin/dropbearkey", "usr/bin/dbclient",
            "usr/lib/openssh/sftp-server")
CMDLINE = "console=ttyS0 quiet"
BASE_DISK_SIZE = "64M"
LIBDIR = "lib/x86_64-linux-gnu"

BASH_WRAPPER = """#!/bin/busybox sh
# build:tiny has no bash; a symlink named bash would not run, so this execs busybox sh.
exec /bin/busybox sh "$@"
"""

SUDO_WRAPPER = r"""#!/bin/busybox sh
# build:tiny has no sudo. This runs the command as root (or -u USER) through busybox su,
# which works without a password because busybox is setuid root and root has an empty
# password (dropbear refuses password and root logins). Common flags are accepted:
# -u USER, -i, -n, -E, -H, -S, -k, --preserve-env[=...], --.
user=root
login=""
while [ $# -gt 0 ]; do
	case "$1" in
	-u) user=$2; shift 2 ;;
	-u*) user=${1#-u}; shift ;;
	-i) login=1; shift ;;
	-iu | -nu | -Eu | -Hu) [ "$1" = -iu ] && login=1; user=$2; shift 2 ;;
	-n | -E | -H | -S | -k | --preserve-env*) shift ;;
	--) shift; break ;;
	-*) echo "sudo (build:tiny): unsupported option $1" >&2; exit 1 ;;
	*) break ;;
	esac
done
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if [ "$(id -u)" = 0 ] && [ "$user" = root ] && [ -z "$login" ]; then
	[ $# -eq 0 ] && exec /bin/sh
	exec "$@"
fi
quote() { printf "'%s' " "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
cmd=""
for a in "$@"; do cmd="$cmd$(quote "$a")"; done
[ -n "$cmd" ] || cmd="exec /bin/sh -l"
flags=""
[ -n "$login" ] && flags="-l"
[ "$user" = root ] && exec /bin/busybox su $flags -s /bin/sh root -c "$cmd"
# su to anyone but root asks for their password unless root asks: go through root.
inner="exec /bin/busybox su $flags -s /bin/sh $(quote "$user") -c $(quote "$cmd")"
exec /bin/busybox su -s /bin/sh root -c "$inner"
"""

POWER_BUTTON = """#!/bin/busybox sh
# acpid runs this on the ACPI power button (QMP system_powerdown).
sync
exec /bin/busybox poweroff -f
"""

INITTAB = """# busybox init only reaps orphans and handles poweroff/reboot; /init did the setup.
::ctrlaltdel:/bin/busybox poweroff -f
::shutdown:/bin/busybox sync
"""

PROFILE = """PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
[ -f /etc/environment ] && { set -a; . /etc/environment; set +a; }
"""

ETC_FILES: dict[str, tuple[int, str]] = {
    # root has an empty password in shadow for the sudo wrapper (see SUDO_WRAPPER); busybox
    # ignores a passwd line whose password field is empty, hence the `x`.
    "etc/passwd": (0o644, "root:x:0:0:root:/root:/bin/sh\n"),
    "etc/group": (0o644, "root:x:0:\ntty:x:5:\nsudo:x:27:\n"),
    "etc/shadow": (0o640, "root::19000:0:99999:7:::\n"),
    "etc/shells": (0o644, "/bin/sh\n/bin/ash\n/bin/bash\n"),
    "etc/profile": (0o644, PROFILE),
    "etc/inittab": (0o644, INITTAB),
    "etc/nsswitch.conf": (0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
    "etc/os-release": (0o644, 'ID=lima-tiny\nPRETTY_NAME="limapy build:tiny"\n'),
    "etc/acpi/PWRF/00000080": (0o755, POWER_BUTTON),
    "bin/bash": (0o755, BASH_WRAPPER),
    "usr/bin/sudo": (0o755, SUDO_WRAPPER),
}
DIRS = (
    "bin", "sbin", "usr/bin", "usr/sbin", "etc/dropbear", "lib/modules", "lib64", LIBDIR,
    "proc", "sys", "dev", "run", "mnt", "home", "var/log", "var/tmp",
)  # fmt: skip


def init_script() -> bytes:
    return resources.files("lima").joinpath("assets/tiny/init").read_bytes()


class TinyRecipe:
    name: str = "tiny"
    tools: tuple[tuple[str, str], ...] = (
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("ldd", "libc-bin"),
        ("qemu-img", "qemu-utils"),
    )
    needs_root: bool = False

    def inputs(self) -> Mapping[str, object]:
        kpkg, kver = build.kernel_package()
        return {
            "recipe": RECIPE_VERSION,
            "packages": build.apt_candidates(USER_PACKAGES),
            "kernel": {kpkg: kver},
            "modules": list(MODULES),
            "init": hashlib.sha256(init_script()).hexdigest(),
            "files": hashlib.sha256(repr((ETC_FILES, DIRS, BINARIES)).encode()).hexdigest(),
            "cmdline": CMDLINE,
        }

    def build(self, ctx: build.BuildContext) -> None:
        kpkg, kver = build.kernel_package()
        versions = {**build.apt_candidates(USER_PACKAGES), kpkg: kver}
        with ctx.step("apt-get download"):
            debs = build.fetch_debs(ctx, versions)
        tree = ctx.workdir / "x"
        with ctx.step("unpack .debs"):
            for deb in debs.values():
                ctx.run(["dpkg-deb", "-x", deb, tree])
        release = build.kernel_release(kpkg)
        with ctx.step("initramfs"):
            archive = Initramfs()
            _add_base(archive, ctx, tree)
            _add_binaries(archive, ctx, tree)
            add_modules(archive, tree / "lib/modules" / release)
            data = archive.to_cpio()
            (ctx.workdir / build.INITRD).write_bytes(gzip.compress(data, 6, mtime=0))
            ctx.log.write(f"initramfs: {len(archive.entries)} entries, {len(data)} bytes\n")
        with ctx.step("kernel and base disk"):
            shutil.copyfile(tree / "boot" / f"vmlinuz-{release}", ctx.workdir / build.KERNEL)
            ctx.run(
                ["qemu-img", "create", "-f", "qcow2", ctx.workdir / build.IMAGE, BASE_DISK_SIZE]
            )
            (ctx.workdir / build.CMDLINE).write_text(CMDLINE + "\n")
            shutil.rmtree(tree)


def _add_base(archive: Initramfs, ctx: build.BuildContext, tree: Path) -> None:
    for d in DIRS:
        archive.dir(d)
    archive.dir("root", 0o700)
    archive.dir("tmp", 0o1777)
    archive.symlink("var/run", "/run")
    archive.node("dev/console", 0o600, 5, 1)
    archive.node("dev/null", 0o666, 1, 3)
    archive.file("init", init_script(), 0o755)
    for path, (mode, text) in ETC_FILES.items():
        archive.file(path, text.encode(), mode)
    # Setuid root: busybox drops privileges for every applet but su (see SUDO_WRAPPER).
    busybox = tree / "bin/busybox"
    archive.file("bin/busybox", busybox.read_bytes(), 0o4755)
    applets = ctx.run([busybox, "--list-full"]).stdout.split()
    for applet in applets:
        # Also in /bin: dropbear's PATH for `ssh guest cmd` has no sbin directories.
        for path in (applet, f"bin/{Path(applet).name}"):
            if applet != "linuxrc" and path not in archive.entries:
                archive.symlink(path, "/bin/busybox")


def _add_binaries(archive: Initramfs, ctx: build.BuildContext, tree: Path) -> None:
    sonames: set[str] = set()
    for rel in BINARIES:
        archive.file(rel, (tree / rel).read_bytes(), 0o755)
        # ldd lists the whole closure of shared libraries; LD_LIBRARY_PATH makes it find
        # them in the unpacked packages even when the host lacks them.
        libpath = f"{tree / LIBDIR}:{tree / 'usr' / LIBDIR}"
        listing = ctx.run(["ldd", tree / rel], env={"LD_LIBRARY_PATH": libpath}).stdout
        for line in listing.splitlines():
            word = line.strip().split(" ", 1)[0]
            if word.startswith("linux-vdso") or not word:
                continue
            sonames.add(Path(word).name)
    for soname in sorted(sonames):
        src = _find_library(tree, soname)
        archive.file(f"{LIBDIR}/{soname}", src.read_bytes(), 0o755)
    archive.symlink("lib64/ld-linux-x86-64.so.2", f"/{LIBDIR}/ld-linux-x86-64.so.2")
    archive.symlink("usr/lib/sftp-server", "/usr/lib/openssh/sftp-server")


def _find_library(tree: Path, soname: str) -> Path:
    for d in (LIBDIR, f"usr/{LIBDIR}", "lib64", "usr/lib64"):
        p = tree / d / soname
        for _ in range(10):  # follow symlinks inside the tree, never onto the host
            if not p.is_symlink():
                break
            target = Path(os.readlink(p))
            p = tree / target.relative_to("/") if target.is_absolute() else p.parent / target
        if p.is_file():
            return p
    raise PermanentError(f"build:tiny: library {soname} not in the unpacked packages")


_DEPENDS = re.compile(rb"(?:^|\x00)depends=([^\x00]*)\x00")


def add_modules(
    archive: Initramfs, moddir: Path, modules: tuple[str, ...] = MODULES, recipe: str = "build:tiny"
) -> None:
    """Copy `modules` and their dependencies, and write lib/modules/load-order (dependencies
    first). build_debian uses it for its initramfs too."""
    by_name: dict[str, Path] = {}
    for ko in (moddir / "kernel").rglob("*.ko"):
        by_name[ko.name[:-3].replace("-", "_")] = ko
    builtin_file = moddir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        for line in builtin_file.read_text().split():
            builtin.add(Path(line).name.removesuffix(".ko").replace("-", "_"))
    order: list[str] = []
    visiting: set[str] = set()

    def visit(mod: str) -> None:
        if mod in order or mod in builtin:
            return
        if mod not in by_name:
            raise PermanentError(f"{recipe}: the kernel has no module {mod}")
        if mod in visiting:
            return
        visiting.add(mod)
        m = _DEPENDS.search(by_name[mod].read_bytes())
        for dep in (m.group(1).decode().split(",") if m else []):
            if dep:
                visit(dep.replace("-", "_"))
        order.append(mod)

    for mod in modules:
        visit(mod)
    for mod in order:
        archive.file(f"lib/modules/{by_name[mod].name}", by_name[mod].read_bytes(), 0o644)
    text = "".join(f"{by_name[m].name}\n" for m in order)
    archive.file("lib/modules/load-order", text.encode(), 0o644)


@dataclass
class _Entry:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = 0


@dataclass
class Initramfs:
    """An in-memory file tree written as a `newc` cpio archive, every file owned by root.

    Written here rather than with cpio(1) so device nodes and setuid bits need no root.
    """

    entries: dict[str, _Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.entries[p] = _Entry(stat.S_IFDIR | 0o755)

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFDIR | mode)

    def file(self, path: str, data: bytes, mode: int, mtime: int = 0) -> None:
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFREG | mode, data, mtime=mtime)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFLNK | 0o777, target.encode())

    def node(self, path: str, mode: int, major: int, minor: int) -> None:
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFCHR | mode, b"", (major, minor))

    def to_cpio(self) -> bytes:
        out = io.BytesIO()
        # Sorted: every directory comes before what it holds.
        for ino, path in enumerate(sorted(self.entries), start=1):
            e = self.entries[path]
            _cpio_record(out, path, ino, e.mode, e.data, e.rdev, e.mtime)
        _cpio_record(out, "TRAILER!!!", 0, 0, b"", (0, 0))
        return out.getvalue()


def _cpio_record(
    out: io.BytesIO, name: str, ino: int, mode: int, data: bytes, rdev: tuple[int, int],
    mtime: int = 0,
) -> None:
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1],
              len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out.write(header + name.encode() + b"\x00")
    out.write(b"\x00" * (-(len(header) + len(name) + 1) % 4))
    out.write(data)
    out.write(b"\x00" * (-len(data) % 4))
