"""Every on-disk name limapy uses: LIMA_HOME, instance directories, _config, cache.

Pure path arithmetic plus reading the environment; nothing here creates files. Also the
table of what an instance directory may hold (`is_known_instance_entry`), which
`lima.drivers.store` consults before deleting anything, and the names of the hidden
work directories create, delete and clone leave in LIMA_HOME when they are killed.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from pathlib import Path

# Files in an instance directory (Lima's names; see DESIGN.md section 5).
LIMA_YAML = "lima.yaml"
LIMA_VERSION = "lima-version"
PROTECTED = "protected"
CLOUD_CONFIG = "cloud-config.yaml"
CIDATA_ISO = "cidata.iso"
ANSIBLE_INVENTORY = "ansible-inventory.yaml"
BASEDISK = "basedisk"
DIFFDISK = "diffdisk"
KERNEL = "kernel"
KERNEL_CMDLINE = "kernel.cmdline"
INITRD = "initrd"
INITRD_EARLY = "initrd.early"  # the image's initrd for boots paused early, when it has one
QEMU_PID = "qemu.pid"
QMP_SOCK = "qmp.sock"
SERIAL_LOG = "serial.log"
SERIAL_SOCK = "serial.sock"
SSH_SOCK = "ssh.sock"
SSH_CONFIG = "ssh.config"
GA_SOCK = "ga.sock"
HA_PID = "ha.pid"
HA_SOCK = "ha.sock"
HA_STDOUT = "ha.stdout.log"
HA_STDERR = "ha.stderr.log"
STATUS_JSON = "status.json"
# Ours: the IID (LIMA_CIDATA_IID) and ssh port the current cidata.iso was built for.
CIDATA_META = "cidata.json"
# Ours: sha256 and size of the basedisk diffdisk was laid over (lima.drivers.images.baserecord).
BASEDISK_RECORD = "basedisk.json"
QEMU_STDOUT = "qemu.stdout.log"
QEMU_STDERR = "qemu.stderr.log"
HA_QEMU_ARGV = "ha.qemu-argv.json"
# Ours: the host agent's DNS server (hostResolver), which QEMU's guestfwd chardev joins.
DNS_SOCK = "dns.sock"
# Lima's: the vhost-user socket of mount N's virtiofsd (mountType virtiofs).
VIRTIOFSD_SOCK = "virtiofsd-{}.sock"
# Ours: the virtiofsd commands limactl hands the host agent (lima.drivers.virtiofs).
HA_VIRTIOFSD = "ha.virtiofsd.json"
# Ours: the filled spec the instance last applied, and its intent generation (drift's "old").
APPLIED_SPEC = "lima.applied.json"
# video.display: vnc (Lima's names): the display QEMU serves and its password, 0600.
VNC_DISPLAY = "vncdisplay"
VNC_PASSWORD = "vncpassword"
# Ours (`limactl suspend`): the guest's whole state as QEMU migrated it, what it was saved
# against, and the temp name the state is written under until the migration completed.
SUSPEND_STATE = "suspend.state"
SUSPEND_META = "suspend.json"
SUSPEND_TMP = "suspend.state.tmp"
# What each running snapshot was taken in (lima.drivers.snapshotshape).
SNAPSHOTS_META = "snapshots.json"

# Directories in LIMA_HOME that are not instances (they start with `_`).
CONFIG = "_config"
LOCKS = "_locks"

# Everything an instance directory may hold: ours, and Lima's (an instance made by Lima,
# or by a newer limapy, must be deletable too). `delete` removes only these, so a file a
# user put there (a disk image, notes) is never lost.
INSTANCE_ENTRIES = frozenset({
    LIMA_YAML, LIMA_VERSION, PROTECTED, CLOUD_CONFIG, CIDATA_ISO, ANSIBLE_INVENTORY,
    BASEDISK, DIFFDISK, KERNEL, KERNEL_CMDLINE, INITRD, INITRD_EARLY, QEMU_PID, QMP_SOCK,
    SERIAL_LOG, SERIAL_SOCK, SSH_SOCK, SSH_CONFIG, GA_SOCK, HA_PID, HA_SOCK, HA_STDOUT, HA_STDERR,
    STATUS_JSON, CIDATA_META, QEMU_STDOUT, QEMU_STDERR, HA_QEMU_ARGV, BASEDISK_RECORD,
    APPLIED_SPEC, DNS_SOCK, VNC_DISPLAY, VNC_PASSWORD, HA_VIRTIOFSD,
    SUSPEND_STATE, SUSPEND_META, SUSPEND_TMP, SNAPSHOTS_META,
    # Lima's own names (Lima 2 calls the disks `disk` and `iso`; vz and EFI files).
    "disk", "iso", "image", "image.ipsw", "qemu-efi-code.fd", "vz-identifier", "vz-efi",
    "vz-hwmodel", "vz-aux", "vz.stdout.log", "vz.stderr.log", "driver.stderr.log",
    "win-done-installation",
})
# The one subdirectory limactl makes in an instance directory: relative portForwards
# hostSocket paths live in it (Lima's `{{.Dir}}/sock/NAME`). It holds sockets only; a delete
# removes them and it, and keeps it when anything else was put there.
SOCK_DIR = "sock"
INSTANCE_ENTRY_PATTERNS = (
    "serial*.log", "serial*.sock", "*.sock", "*.pid",
    "ssh.sock.*",  # ssh's ControlMaster socket while it is being created
    ".status.*.tmp",  # status.json's atomic-write temp
    ".suspend.json.*",  # suspend.json's atomic-write temp
    ".snapshots.json.*",  # snapshots.json's atomic-write temp
)

# `.creating-NAME@PID-XXXX` / `.deleting-NAME@PID-XXXX` / `.cloning-NAME@PID-XXXX`: the
# hidden work directories of create, delete and clone. `@` cannot occur in a name, so the
# name and the PID parse back unambiguously; the PID says whether their maker is still at
# work.
_WORK_DIR = re.compile(r"^\.(?P<kind>creating|deleting|cloning)-(?P<name>[^@/]+)@(?P<pid>[0-9]+)-")

# The size of sun_path in Linux's struct sockaddr_un: a socket path must be shorter than
# this, since QEMU, ssh and the kernel's own users want room for the terminating NUL.
# (Lima uses 104 on macOS, where sun_path is smaller; limapy runs on Linux only.)
# tests/unit/test_facts_once.py checks the value against a real bind().
UNIX_PATH_MAX = 108


# lima_home() for the inputs it depends on: `list` asks for it hundreds of times.
_HOMES: dict[tuple[str | None, str | None, str | None], Path] = {}


def lima_home() -> Path:
    """`$LIMA_HOME`, else `~/.lima`."""
    env = os.environ.get("LIMA_HOME")
    relative = bool(env) and not env.startswith(("/", "~"))  # type: ignore[union-attr]
    key = (env, os.environ.get("HOME"), os.getcwd() if relative else None)
    home = _HOMES.get(key)
    if home is None:
        home = Path(env).expanduser().absolute() if env else Path.home() / ".lima"
        _HOMES[key] = home
    return home


def instance_dir(name: str) -> Path:
    """`$LIMA_HOME/NAME` after `lima.names.validate_name` (SpecError for any other name):
    kept so that no caller can build an instance path from an unchecked name."""
    from lima.names import instance_dir_for  # lima.names imports this module

    return instance_dir_for(name)


def config_dir() -> Path:
    return lima_home() / CONFIG


def locks_dir() -> Path:
    """`$LIMA_HOME/_locks`: instance locks and requests (see lima.controller.lock)."""
    return lima_home() / LOCKS


def templates_dir() -> Path:
    """`$LIMA_HOME/_templates`: user templates found by `template:NAME`."""
    return lima_home() / "_templates"


def user_identity() -> Path:
    """The private key limapy generates for every instance: `_config/user`."""
    return config_dir() / "user"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/lima`, else `~/.cache/lima`."""
    env = os.environ.get("XDG_CACHE_HOME")
    base = Path(env) if env else Path.home() / ".cache"
    return base / "lima"


def download_dir() -> Path:
    return cache_dir() / "download" / "by-url-sha256"


def builtin_templates_dir() -> Path:
    return Path(__file__).parent / "templates"


def is_instance_dir(path: Path) -> bool:
    """Instance directories are the directories in LIMA_HOME named like an instance (so
    never `_config`, `.creating-...` or a directory a user made with a space in its name)."""
    from lima.names import is_valid_name

    return is_valid_name(path.name) and path.is_dir()


def is_known_instance_entry(entry: str) -> bool:
    """Whether `entry` (a name in an instance directory) is one limactl or Lima writes:
    the table above, or an atomic-write temp of one of them (`.NAME.<anything>`)."""
    if entry in INSTANCE_ENTRIES or any(fnmatchcase(entry, p) for p in INSTANCE_ENTRY_PATTERNS):
        return True
    if entry.startswith("."):
        return any(entry.startswith(f".{known}.") for known in INSTANCE_ENTRIES)
    return False


def work_dir_name(kind: str, name: str, pid: int, unique: str) -> str:
    """`.creating-NAME@PID-UNIQUE` (kind "creating"), `.deleting-...` or `.cloning-...`."""
    return f".{kind}-{name}@{pid}-{unique}"


def parse_work_dir(entry: str) -> tuple[str, str, int] | None:
    """(kind, instance name, PID of its maker) of a create/delete work directory."""
    m = _WORK_DIR.match(entry)
    if m is None:
        return None
    return m["kind"], m["name"], int(m["pid"])
