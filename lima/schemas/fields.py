"""One table of field facts: for each lima.yaml field, its builtin default, how the files
that set it combine (merge rule) and what a change of it needs on a running instance (drift
class, DESIGN.md section 4); and for each key of a list's entries, its builtin and whether
`base:` merging copies it between entries with the same key.

Read by `defaults.fill()` (the builtin defaults and which values count as unset), by
`merge` (lists whose base entries come first, keys copied between entries), by
`lima.states.drift.classify()` (the drift classes) and by the tests, which fail when a
field of lima.schema.json has no row here, or a row names no field of the schema. Pure data.

A row covers its path and everything under it (`mounts` covers `mounts[0].writable`);
objects whose sub-fields differ get one row per sub-field instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lima.schemas.hostfacts import HostFacts
from lima.units import bytes_size


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


class _Falsy:
    def __repr__(self) -> str:
        return "FALSY"


# In `empty`: every value Python counts as false ("", 0, False, [], {}), as Lima tests for
# Go's zero value.
FALSY: Any = _Falsy()


def is_unset(value: Any, empty: tuple[Any, ...]) -> bool:
    """Whether `value` means "not set": null, or one of `empty` (of the same type: 0 is not
    False), or any false value when `empty` holds FALSY."""
    return value is None or any(
        not value if e is FALSY else value == e and type(value) is type(e) for e in empty
    )


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
    base_first: bool = False  # a list whose `base:` template's entries come first


class Combine(StrEnum):
    """What `merge.combine_list_entries` does with a key of an entry when a later entry of
    the list has the same name / mount point / interface."""

    KEEP = "keep"  # the earlier entry's value, or its absence, stands
    FILL = "fill"  # null or absent in the earlier entry: the later entry's value is copied
    FILL_EMPTY = "fill-empty"  # FILL, where a false value ([], "") counts as absent


@dataclass(frozen=True)
class Entry:
    """A key of each entry of a list field."""

    list_path: str  # the list's row: "mounts", "firmware.images"
    key: str  # dotted, inside one entry: "sshfs.cache"
    # Set by `defaults.fill()` where the entry leaves it unset: a value, a Derived (computed
    # there), or UNSET (left alone). A dotted key is set only where its parent is an object.
    default: Any = UNSET
    when: tuple[str, Any] | None = None  # (key, value): only in entries where key == value
    empty: tuple[Any, ...] = ()  # besides null, values that mean "unset" (see is_unset)
    combine: Combine = Combine.KEEP
    exclusive: tuple[str, ...] = ()  # set instead of this key: copied only if none are set


def _host(fn: Callable[[HostFacts], Any]) -> Callable[[HostFacts], Any]:
    return fn


def _memory(host: HostFacts) -> str:
    return bytes_size(min(4 << 30, host.memory // 2))


L, R, C = Drift.LIVE, Drift.RESTART, Drift.RECREATE

FIELDS: tuple[Field, ...] = (
    Field("base", L, Merge.EMBED, note="merged into the document when it is loaded",
          base_first=True),
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
          default=Derived("virtiofs for vz, else 9p; reverse-sshfs when 9p is unsupported")),
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
    Field("provision", R, Merge.CONCAT, default=[], base_first=True),
    Field("guestInstallPrefix", R, default="/usr/local"),
    Field("probes", L, Merge.CONCAT, default=[], base_first=True),
    Field("portForwards", L, Merge.CONCAT, default=[]),
    Field("copyToHost", L, Merge.CONCAT, default=[]),
    Field("message", L),
    # limapy's own settings (Lima warns about the key and goes on). runState: what apply and
    # the controller drive to; not in the generation (asking for it is never a new boot).
    Field("x-limapy", L, note="runState: running, stopped or suspended; the file only"),
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
    Field("user.passwordlessSudo", R, default=True, note="Lima >= 2.2; false is refused"),
    Field("rosetta.enabled", R, Merge.FIXED, default=False),
    Field("rosetta.binfmt", R, default=False),
    Field("firmware.legacyBIOS", R, default=False),
    Field("firmware.images", R, Merge.CONCAT, default=[]),
    Field("audio.device", R, default=""),
    Field("audio.interface", R, default="", note="Lima >= 2.2"),
    Field("video.display", R, default="none", empty=("",)),
    Field("video.vnc.display", R, default="127.0.0.1:0,to=9"),
    Field("timezone", R, default=_host(lambda h: h.timezone)),
    Field("plain", R, default=False),
    Field("nestedVirtualization", R, default=False),
    Field("tpm", R, default=False, note="Lima >= 2.2; true is refused (no swtpm here)"),
    Field("osOpts", R, Merge.MAP, default={}, note="Lima >= 2.2; Windows guests only"),
)

_BY_PATH = {f.path: f for f in FIELDS}

F, FE, Z = Combine.FILL, Combine.FILL_EMPTY, (FALSY,)
DATA, DEPENDENCY = ("mode", "data"), ("mode", "dependency")
# The fill sets an entry's missing keys in this order (so new keys land in it), and merge
# copies keys between entries in this order.
ENTRIES: tuple[Entry, ...] = (
    Entry("images", "arch", Derived("the instance's arch"), empty=Z),
    Entry("images", "kernel.arch", Derived("the image's arch"), empty=Z),
    Entry("images", "initrd.arch", Derived("the image's arch"), empty=Z),
    Entry("firmware.images", "arch", Derived("the instance's arch"), empty=Z),
    Entry("containerd.archives", "arch", Derived("the instance's arch"), empty=Z),
    Entry("additionalDisks", "format", combine=F),
    Entry("additionalDisks", "fsType", combine=F),
    Entry("additionalDisks", "fsArgs", combine=FE),  # inherited whole, never appended
    Entry("mounts", "mountPoint", Derived("the location, expanded"), combine=F),
    Entry("mounts", "writable", False, combine=F),
    Entry("mounts", "sshfs.cache", True, combine=F),
    Entry("mounts", "sshfs.followSymlinks", False, combine=F),
    Entry("mounts", "sshfs.sftpDriver", combine=F),  # Lima fills "" (pick one): same as unset
    Entry("mounts", "9p.securityModel", "none", combine=F),
    Entry("mounts", "9p.protocolVersion", "9p2000.L", combine=F),
    Entry("mounts", "9p.msize", "128KiB", combine=F),
    Entry("mounts", "9p.cache", Derived("mmap when writable, else fscache"), combine=F),
    Entry("mounts", "virtiofs.queueSize", combine=F),
    Entry("provision", "mode", "system", empty=Z),
    Entry("provision", "skipDefaultDependencyResolution", False, when=DEPENDENCY),
    Entry("provision", "content", "", when=DATA),
    Entry("provision", "overwrite", True, when=DATA),
    Entry("provision", "owner", "root:root", when=DATA),
    Entry("provision", "permissions", "644", when=DATA),
    Entry("probes", "mode", "readiness", empty=Z),
    Entry("probes", "description", Derived("user probe N/M: its place in the list"), empty=Z),
    Entry("portForwards", "proto", "any", empty=Z),  # Lima >= 2.0 (UDP too)
    Entry("portForwards", "guestIP", Derived("0.0.0.0 with guestIPMustBeZero, else 127.0.0.1")),
    Entry("portForwards", "guestIPMustBeZero", Derived("whether guestIP is 0.0.0.0")),
    Entry("portForwards", "hostIP", "127.0.0.1"),
    Entry("portForwards", "guestPortRange", empty=(FALSY, [0, 0]),
          default=Derived("[guestPort, guestPort], else [1, 65535]")),
    Entry("portForwards", "hostPortRange", empty=(FALSY, [0, 0]),
          default=Derived("[hostPort, hostPort], else guestPortRange")),
    # `lima` and `socket` name the network two ways: an entry takes one of them.
    Entry("networks", "lima", combine=F, exclusive=("socket",)),
    Entry("networks", "socket", combine=F, exclusive=("lima",)),
    Entry("networks", "macAddress", Derived("from the instance's lima.yaml path, the index and "
                                            "the host's machine id"), empty=Z, combine=F),
    Entry("networks", "interface", Derived("lima0, lima1, ...: the index"), empty=Z),
    Entry("networks", "vzNAT", combine=F),
    Entry("networks", "metric", 100, combine=F),
)


def entry_rows(list_path: str) -> tuple[Entry, ...]:
    """The Entry rows of one list, in table order (none for a list without rows)."""
    return tuple(row for row in ENTRIES if row.list_path == list_path)


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
