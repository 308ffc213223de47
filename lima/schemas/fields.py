"""One table of field facts: for each lima.yaml field, its builtin default, how the files
that set it combine (merge rule) and what a change of it needs on a running instance (drift
class, DESIGN.md section 4).

Read by `defaults.fill()` (the builtin defaults and which values count as unset), by
`lima.states.drift.classify()` (the drift classes) and by the tests, which fail when a
field of lima.schema.json has no row here, or a row names no field of the schema. Pure data.

A row covers its path and everything under it (`mounts` covers `mounts[0].writable`);
objects whose sub-fields differ get one row per sub-field instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lima.schemas.defaults import HostFacts


class Drift(StrEnum):
    """What a change of the field needs when the instance exists (DESIGN.md section 4)."""

    LIVE = "live"  # applied without a restart
    RESTART = "restart"  # stop, then boot with the new spec
    RECREATE = "recreate"  # the disk is rebuilt: the guest's data is lost
    REJECT = "reject"  # never applied (e.g. shrinking the disk)


class Merge(StrEnum):
    """How `_config/default.yaml`, the instance's file and `_config/override.yaml` (and
    `base:` templates, lima.schemas.merge) combine into the filled value."""

    SCALAR = "scalar"  # the instance's, else default.yaml's, else builtin; override wins
    MAP = "map"  # key by key: default, then instance, then override
    DEEP_MAP = "deep-map"  # MAP, recursively
    CONCAT = "concat"  # override + instance + default entries
    UNIQUE = "unique"  # CONCAT, each value once
    KEYED = "keyed"  # entries with the same key (mount point, interface) combine
    WHOLE = "whole"  # the highest priority file's list, whole (dns)
    MAX_VERSION = "max-version"  # the highest version wins
    EMBED = "embed"  # resolved while templates are loaded; never in the filled document
    FIXED = "fixed"  # not the user's to set on this host (rosetta.enabled off Apple)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # no builtin default: the field stays absent unless set


@dataclass(frozen=True)
class Derived:
    """A builtin computed from other fields by `defaults.fill()`; `rule` says how."""

    rule: str


@dataclass(frozen=True)
class Field:
    path: str  # dotted, as in lima.yaml: "ssh.localPort"
    drift: Drift
    merge: Merge = Merge.SCALAR
    # The builtin: a value, a function of the host's facts, a Derived, or UNSET.
    default: Any = UNSET
    empty: tuple[Any, ...] = ()  # values that mean "unset" (Lima: 0 cpus, "" vmType)
    note: str = ""


def _host(fn: Callable[[HostFacts], Any]) -> Callable[[HostFacts], Any]:
    return fn


def _memory(host: HostFacts) -> str:
    from lima.schemas.defaults import bytes_size

    return bytes_size(min(4 << 30, host.memory // 2))


L, R, C = Drift.LIVE, Drift.RESTART, Drift.RECREATE

FIELDS: tuple[Field, ...] = (
    Field("base", L, Merge.EMBED, note="merged into the document when it is loaded"),
    Field("minimumLimaVersion", L, Merge.MAX_VERSION, note="checked when loading"),
    Field("vmType", C, default="qemu", empty=("", "default")),
    Field("vmOpts.qemu.minimumVersion", R, Merge.MAX_VERSION),
    Field("vmOpts.qemu.cpuType", R, Merge.DEEP_MAP, default={}),
    Field("vmOpts.qemu.restrictNetwork", R, Merge.DEEP_MAP, default=False),
    Field("vmOpts.vz", R, Merge.DEEP_MAP),
    Field("os", C, default="Linux", empty=("", "default")),
    Field("arch", C, default=_host(lambda h: h.arch), empty=("", "default")),
    Field("images", C, Merge.CONCAT, default=[]),
    Field("cpuType", R, Merge.DEEP_MAP, note="moved into vmOpts.qemu.cpuType"),
    Field("cpus", R, default=_host(lambda h: min(4, h.cpus)), empty=(0,)),
    Field("memory", R, default=_host(_memory), empty=("",)),
    Field("disk", R, default="100GiB", empty=("",),
          note="growing is applied at the next boot; shrinking is rejected"),
    Field("additionalDisks", R, Merge.CONCAT, default=[]),
    Field("mounts", R, Merge.KEYED, default=[]),
    Field("mountTypesUnsupported", R, Merge.UNIQUE, default=[]),
    Field("mountType", R, empty=("", "default"),
          default=Derived("virtiofs for vz, else reverse-sshfs; 9p when that is unsupported")),
    Field("mountInotify", R, default=False),
    Field("ssh.address", R),
    Field("ssh.localPort", R, default=0),
    Field("ssh.loadDotSSHPubKeys", R, default=False),
    Field("ssh.forwardAgent", R, default=False),
    Field("ssh.forwardX11", R, default=False),
    Field("ssh.forwardX11Trusted", R, default=False),
    Field("ssh.overVsock", R),
    Field("caCerts.removeDefaults", R, default=False),
    Field("caCerts.files", R, Merge.UNIQUE, default=[]),
    Field("caCerts.certs", R, Merge.UNIQUE, default=[]),
    Field("upgradePackages", R, default=False),
    Field("containerd.system", R, default=False),
    Field("containerd.user", R, default=False, note="Lima: true on x86_64/aarch64"),
    Field("containerd.archives", R, Merge.CONCAT, default=[]),
    Field("provision", R, Merge.CONCAT, default=[]),
    Field("guestInstallPrefix", R, default="/usr/local"),
    Field("probes", L, Merge.CONCAT, default=[]),
    Field("portForwards", L, Merge.CONCAT, default=[]),
    Field("copyToHost", L, Merge.CONCAT, default=[]),
    Field("message", L),
    Field("networks", R, Merge.KEYED, default=[]),
    Field("env", R, Merge.MAP, default={}),
    Field("param", R, Merge.MAP, default={}),
    Field("dns", R, Merge.WHOLE, default=[]),
    Field("hostResolver.enabled", R, default=Derived("false for vmType hcs, else true")),
    Field("hostResolver.ipv6", R, default=False),
    Field("hostResolver.hosts", R, Merge.MAP, default={}),
    Field("propagateProxyEnv", R, default=True),
    Field("user.name", R, default=Derived("the host user, when a valid Linux name; else lima")),
    Field("user.comment", R, default=_host(lambda h: h.comment)),
    Field("user.home", R, default="/home/{{.User}}.guest"),
    Field("user.shell", R, default="/bin/bash"),
    Field("user.uid", R, default=Derived("the host uid; 1000 for root")),
    Field("rosetta.enabled", R, Merge.FIXED, default=False),
    Field("rosetta.binfmt", R, default=False),
    Field("firmware.legacyBIOS", R, default=False),
    Field("firmware.images", R, Merge.CONCAT, default=[]),
    Field("audio.device", R, default=""),
    Field("video.display", R, default="none", empty=("",)),
    Field("video.vnc.display", R, default="127.0.0.1:0,to=9"),
    Field("timezone", R, default=_host(lambda h: h.timezone)),
    Field("plain", R, default=False),
    Field("nestedVirtualization", R, default=False),
    Field("tpm", R),
)

_BY_PATH = {f.path: f for f in FIELDS}


def field(path: str) -> Field:
    """The row for exactly `path` (KeyError: no such row)."""
    return _BY_PATH[path]


def covering(keys: tuple[str, ...]) -> Field | None:
    """The row covering a path given as its dict keys (list indexes left out): the longest
    row path that is a prefix of it. None: no row covers it (an unknown field)."""
    for n in range(len(keys), 0, -1):
        row = _BY_PATH.get(".".join(keys[:n]))
        if row is not None:
            return row
    return None


def builtin(path: str, host: HostFacts) -> Any:
    """The builtin default of `path` for this host (a fresh copy for lists and maps).
    A Derived or UNSET default is the caller's to compute: this raises ValueError."""
    value = _BY_PATH[path].default
    if value is UNSET or isinstance(value, Derived):
        raise ValueError(f"{path}: no fixed builtin default ({value!r})")
    if callable(value):
        return value(host)
    if isinstance(value, list | dict):
        return type(value)(value)
    return value
