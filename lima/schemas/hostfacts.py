"""The host facts lima.yaml's defaults depend on (arch, CPUs, memory, user, time zone,
machine id, temp dir), read once by `host_facts()`; the guest user Lima derives from the
host user (`lima_user`). Used by lima.schemas.defaults (the fill) and lima.schemas.fields
(the builtin defaults table).
"""

from __future__ import annotations

import functools
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from lima.schemas.arch import host_arch

FALLBACK_USER = "lima"
FALLBACK_UID = 1000
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]*$")

@dataclass(frozen=True)
class HostFacts:
    """What the defaults depend on in the host; `host_facts()` reads the real ones."""

    arch: str
    cpus: int
    memory: int  # bytes
    user: str  # host user name, as is ({{.User}} in host templates)
    uid: int
    comment: str
    home: str
    timezone: str
    machine_id: str
    tempdir: str


@functools.cache
def host_facts() -> HostFacts:
    entry = pwd.getpwuid(os.getuid())
    return HostFacts(
        arch=host_arch(),
        cpus=os.cpu_count() or 1,
        memory=_host_memory(),
        user=entry.pw_name,
        uid=entry.pw_uid,
        comment=entry.pw_gecos.split(",")[0],
        home=os.environ.get("HOME") or entry.pw_dir,
        timezone=_host_timezone(),
        machine_id=_read_text("/etc/machine-id") or _read_text("/var/lib/dbus/machine-id"),
        tempdir=os.environ.get("TMPDIR") or "/tmp",
    )


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _host_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 4 << 30


def _host_timezone() -> str:
    # Lima: /etc/timezone, else the zoneinfo name the /etc/localtime symlink points to.
    name = _read_text("/etc/timezone")
    if name:
        return name
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return ""
    _, sep, zone = target.partition("zoneinfo/")
    return zone if sep else ""


def lima_user(host: HostFacts) -> tuple[str, int, list[str]]:
    """(user name, uid, warnings) for the guest user, as Lima's osutil.LimaUser picks them."""
    warnings: list[str] = []
    name, uid = host.user, host.uid
    if name == "admin" or not _USERNAME.match(name):
        warnings.append(
            f"local user {name!r} is not a valid Linux user name; using {FALLBACK_USER!r}"
        )
        name = FALLBACK_USER
    if uid == 0:
        # root on the host: the guest user must not be root (user.uid 0 is invalid).
        warnings.append(f"local user is root; the guest user will be {FALLBACK_USER!r} "
                        f"(uid {FALLBACK_UID})")
        name, uid = FALLBACK_USER, FALLBACK_UID
    return name, uid, warnings
