"""virtiofs mounts on QEMU: which virtiofsd, its command lines, and QEMU's devices for them.

Called by lima.drivers.qemu (`memory_args`, `device_args`: the shared guest memory and one
vhost-user-fs-pci device per mount) and by lima.drivers.instance (`daemon_commands`, once per
start, before the host agent is spawned: the commands it hands the agent, which starts them
before qemu; lima.drivers.hostagent.virtiofsd). Everything here is pure but `find_virtiofsd`
and `flavor_of`, which look at the host.

Facts followed: Lima starts one virtiofsd per mount with its vhost-user socket at
`<instance>/virtiofsd-N.sock`, gives QEMU a `char-virtiofs-N` chardev and a
`vhost-user-fs-pci,queue-size=Q,chardev=...,tag=TAG` device, and shares the guest RAM (a
vhost-user back end maps it). Lima looks for the Rust virtiofsd only; limapy also runs QEMU's
C virtiofsd (Debian 12: /usr/lib/qemu/virtiofsd, package qemu-system-common). That one
sandboxes itself in new namespaces, which needs root: when limactl does not run as root it
runs inside a user namespace (util-linux `unshare`) that maps the current user to itself and
keeps the namespace's capabilities, so the guest user (Lima gives it the host user's uid)
creates files as the host user. Its vhost-user socket is bound by the host agent and
passed as `--fd`: the C virtiofsd would otherwise lock a pid file in /run/virtiofsd, which
an unprivileged user cannot create.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.errors import PermanentError
from lima.schemas.defaults import VIRTIOFS_QUEUE_SIZE
from lima.schemas.spec import InstanceSpec, Mount

# Where virtiofsd is looked for, in order, after `virtiofsd` on PATH: Fedora/Arch's
# libexec, then Debian's QEMU package.
FIXED_PLACES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
# QEMU's vhost-user back-end descriptions (Lima reads these): {"type": "fs", "binary": ...}.
VHOST_USER_DIRS = ("~/.local/share/qemu/vhost-user", "/usr/local/share/qemu/vhost-user",
                   "/usr/share/qemu/vhost-user")
C_FLAVOR = "c"  # QEMU's own virtiofsd (QEMU <= 8.0): `-o source=DIR`, root-only sandbox
RUST_FLAVOR = "rust"  # gitlab.com/virtio-fs/virtiofsd: `--shared-dir DIR`, runs unprivileged
# The line both print once they wait for QEMU on the socket: the daemon is ready.
READY_LINE = "Waiting for vhost-user socket connection"
INSTALL_HINT = ("install virtiofsd (Debian 12: package qemu-system-common ships "
                "/usr/lib/qemu/virtiofsd) or use mountType \"9p\" or \"reverse-sshfs\"")


@dataclass(frozen=True)
class DaemonCommand:
    """How to start the virtiofsd of one mount; `argv` holds FD_PLACEHOLDER where the
    listening socket's descriptor number goes (known only once the agent binds it)."""

    index: int
    socket: str  # absolute path of virtiofsd-N.sock
    location: str  # the host directory it shares
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "socket": self.socket, "location": self.location,
                "argv": list(self.argv)}

    @classmethod
    def from_json(cls, data: object) -> DaemonCommand:
        if not isinstance(data, dict):
            raise ValueError("expected an object")
        argv = data.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv: expected a non-empty list of strings")
        return cls(index=int(data["index"]), socket=str(data["socket"]),
                   location=str(data["location"]), argv=tuple(argv))


FD_PLACEHOLDER = "{fd}"


def socket_path(inst_dir: Path, index: int) -> Path:
    """The vhost-user socket of mount `index` (Lima's virtiofsd-N.sock)."""
    return inst_dir / paths.VIRTIOFSD_SOCK.format(index)


def uses_virtiofs(spec: InstanceSpec) -> bool:
    return spec.mount_type == "virtiofs" and bool(spec.mounts)


def queue_size(m: Mount) -> int:
    value = m.virtiofs.get("queueSize")
    return value if isinstance(value, int) and value > 0 else VIRTIOFS_QUEUE_SIZE


# -- QEMU's side -----------------------------------------------------------------------------
def memory_args(spec: InstanceSpec) -> list[str]:
    """vhost-user maps the guest RAM: a shareable memfd backend as large as -m, as NUMA node 0
    (nothing for other mount types)."""
    if not uses_virtiofs(spec):
        return []
    return ["-object", f"memory-backend-memfd,id=mem,size={spec.memory},share=on",
            "-numa", "node,memdev=mem"]  # fmt: skip


def device_args(spec: InstanceSpec, inst_dir: Path) -> list[str]:
    """One chardev (the daemon's socket) and one vhost-user-fs-pci device per mount."""
    from lima.drivers.virtfs import mount_tag

    out: list[str] = []
    if not uses_virtiofs(spec):
        return out
    for i, m in enumerate(spec.mounts):
        chardev = f"char-virtiofs-{i}"
        out += ["-chardev", f"socket,id={chardev},path={_esc(socket_path(inst_dir, i))}",
                "-device", f"vhost-user-fs-pci,queue-size={queue_size(m)},chardev={chardev},"
                           f"tag={mount_tag(m.location, m.mount_point)}"]  # fmt: skip
    return out


# -- virtiofsd's side ------------------------------------------------------------------------
def find_virtiofsd(which: Callable[[str], str | None] = shutil.which,
                   exists: Callable[[str], bool] = os.path.isfile) -> str | None:
    """The virtiofsd to run: on PATH, in FIXED_PLACES, or named by a vhost-user "fs" file."""
    found = which("virtiofsd")
    if found:
        return found
    for place in FIXED_PLACES:
        if exists(place) and os.access(place, os.X_OK):
            return place
    for folder in VHOST_USER_DIRS:
        try:
            names = sorted(os.listdir(os.path.expanduser(folder)))
        except OSError:
            continue
        for name in (n for n in names if n.endswith(".json")):
            try:
                with open(os.path.join(os.path.expanduser(folder), name), "rb") as fh:
                    desc = json.load(fh)
            except (OSError, ValueError):
                continue
            binary = desc.get("binary") if isinstance(desc, dict) else None
            if desc.get("type") == "fs" and isinstance(binary, str) and exists(binary):
                return binary
    return None


def flavor_of(binary: str) -> str:
    """C_FLAVOR or RUST_FLAVOR, from the options its --help lists."""
    from lima.drivers import runner

    try:
        res = runner.run([binary, "--help"], check=False, timeout=10)
    except runner.CommandError as exc:
        raise PermanentError(f"cannot run {binary}: {exc}") from exc
    text = res.stdout + res.stderr
    return RUST_FLAVOR if "--shared-dir" in text else C_FLAVOR


def daemon_argv(binary: str, flavor: str, location: str, *, as_root: bool) -> list[str]:
    """The command of one virtiofsd sharing `location` on the socket FD_PLACEHOLDER (pure)."""
    if flavor == RUST_FLAVOR:
        return [binary, f"--fd={FD_PLACEHOLDER}", f"--shared-dir={location}"]
    # fuse's option parser splits at commas; a backslash escapes one.
    source = location.replace("\\", "\\\\").replace(",", "\\,")
    argv = [binary, f"--fd={FD_PLACEHOLDER}", "-o", f"source={source}", "-o", "cache=auto"]
    if as_root:
        return argv
    # Unprivileged: a user namespace where we keep our own uid and gid and hold the
    # capabilities virtiofsd's namespace sandbox needs. It cannot raise RLIMIT_NOFILE
    # there, so it keeps the current one.
    return ["unshare", "--user", "--map-current-user", "--keep-caps", "--",
            *argv, "--rlimit-nofile=0"]  # fmt: skip


def daemon_commands(spec: InstanceSpec, inst_dir: Path, *, binary: str | None = None,
                    flavor: str | None = None, as_root: bool | None = None
                    ) -> list[DaemonCommand]:
    """The virtiofsd command of every mount of a virtiofs spec ([] for other mount types).

    Raises PermanentError when no virtiofsd is installed or a socket path is too long.
    """
    if not uses_virtiofs(spec):
        return []
    binary = binary or find_virtiofsd()
    if binary is None:
        raise PermanentError(f'mountType "virtiofs" needs virtiofsd, which is not installed '
                             f"(looked on PATH and in {', '.join(FIXED_PLACES)}): "
                             f"{INSTALL_HINT}")
    flavor = flavor or flavor_of(binary)
    root = os.geteuid() == 0 if as_root is None else as_root
    out = []
    for i, m in enumerate(spec.mounts):
        sock = socket_path(inst_dir.absolute(), i)
        if len(os.fsencode(sock)) >= paths.UNIX_PATH_MAX:
            raise PermanentError(f"instance directory {inst_dir} is too long: socket path "
                                 f"{sock} must be shorter than {paths.UNIX_PATH_MAX} bytes "
                                 "(use a shorter LIMA_HOME or instance name)")
        out.append(DaemonCommand(i, str(sock), m.location,
                                 tuple(daemon_argv(binary, flavor, m.location, as_root=root))))
    return out


def with_fd(argv: Sequence[str], fd: int) -> list[str]:
    """`argv` with the socket's descriptor number in place of FD_PLACEHOLDER."""
    return [a.replace(FD_PLACEHOLDER, str(fd)) for a in argv]


def _esc(value: str | Path) -> str:
    """A value inside a QEMU `key=value,...` option: commas are doubled."""
    return str(value).replace(",", ",,")
