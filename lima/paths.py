"""Every on-disk name limapy uses: LIMA_HOME, instance directories, _config, cache.

Pure path arithmetic plus reading the environment; nothing here creates files.
"""

from __future__ import annotations

import os
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
# Ours: the instance-id and ssh port the current cidata.iso was built for.
CIDATA_META = "cidata.json"

# Unix socket paths are limited to 108 bytes on Linux (sun_path), NUL included.
UNIX_PATH_MAX = 104


def lima_home() -> Path:
    """`$LIMA_HOME`, else `~/.lima`."""
    env = os.environ.get("LIMA_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".lima"


def instance_dir(name: str) -> Path:
    return lima_home() / name


def config_dir() -> Path:
    return lima_home() / "_config"


def templates_dir() -> Path:
    """`$LIMA_HOME/_templates`: user templates found by `template:NAME`."""
    return lima_home() / "_templates"


def disks_dir() -> Path:
    return lima_home() / "_disk"


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
    """Instance directories are every directory in LIMA_HOME not starting with `_` or `.`."""
    return path.is_dir() and not path.name.startswith(("_", "."))
