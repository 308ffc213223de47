"""InstanceSpec: the frozen, typed view of a filled lima.yaml that every later layer reads.

Built once by `lima.schemas.build_spec()` from the filled (defaulted, template-expanded)
document; `raw` keeps that document so it round-trips to JSON/YAML and hashes to the
generation. Field names follow Lima's keys in snake_case; sizes are bytes.

The builtin defaults live in lima.schemas.fields (filled by defaults.fill()); a default
here is only ever the empty value of its type (False, 0, "", None, empty), for specs built
by hand in tests. tests/unit/test_fields.py holds that line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FileRef:
    """A downloadable file: an image, a kernel, an initrd."""

    location: str
    arch: str
    digest: str | None = None


@dataclass(frozen=True)
class KernelRef(FileRef):
    cmdline: str = ""


@dataclass(frozen=True)
class Image:
    """One `images[]` candidate."""

    location: str
    arch: str
    digest: str | None = None
    variant: str | None = None
    kernel: KernelRef | None = None
    initrd: FileRef | None = None


@dataclass(frozen=True)
class Mount:
    location: str  # host path, `~` expanded
    mount_point: str  # guest path
    writable: bool = False
    # sshfs / 9p / virtiofs options, as Lima's keys, already defaulted.
    sshfs: Mapping[str, Any] = field(default_factory=dict)
    nine_p: Mapping[str, Any] = field(default_factory=dict)
    virtiofs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AdditionalDisk:
    """One `additionalDisks[]` entry: a Lima disk ($LIMA_HOME/_disks/NAME) to attach."""

    name: str
    format: bool = False  # mkfs it at first use when it has no `lima-NAME` label
    fs_type: str = ""  # "" means ext4 (Lima's boot script default)
    fs_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provision:
    """One provision step; `file:` references are already inlined into `script`/`content`."""

    mode: str  # system | user | boot | dependency | data | ansible | yq
    script: str | None = None
    path: str | None = None
    content: str | None = None
    expression: str | None = None
    format: str | None = None
    owner: str | None = None
    permissions: str | None = None
    overwrite: bool | None = None
    user: str | None = None
    playbook: str | None = None
    skip_default_dependency_resolution: bool | None = None


@dataclass(frozen=True)
class Probe:
    mode: str  # readiness
    script: str
    hint: str = ""
    description: str = ""


@dataclass(frozen=True)
class PortForward:
    guest_ip: str
    host_ip: str
    proto: str
    guest_ip_must_be_zero: bool = False
    guest_port: int | None = None
    guest_port_range: tuple[int, int] | None = None
    guest_socket: str | None = None
    host_port: int | None = None
    host_port_range: tuple[int, int] | None = None
    host_socket: str | None = None
    reverse: bool = False
    ignore: bool = False
    static: bool = False


@dataclass(frozen=True)
class SSHConfig:
    local_port: int = 0  # 0: pick a free port at each start (also the builtin)
    load_dot_ssh_pubkeys: bool = False
    forward_agent: bool = False
    forward_x11: bool = False
    forward_x11_trusted: bool = False


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    comment: str
    home: str
    shell: str


@dataclass(frozen=True)
class QemuOptions:
    min_version: str | None = None
    restrict_network: bool = False  # ours: QEMU user networking with restrict=on


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    vm_type: str
    os: str
    arch: str
    images: tuple[Image, ...]
    cpus: int
    memory: int
    disk: int
    mounts: tuple[Mount, ...]
    mount_type: str
    ssh: SSHConfig
    user: User
    provision: tuple[Provision, ...] = ()
    probes: tuple[Probe, ...] = ()
    port_forwards: tuple[PortForward, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    param: Mapping[str, str] = field(default_factory=dict)
    dns: tuple[str, ...] = ()
    cpu_type: str = ""
    qemu: QemuOptions = field(default_factory=QemuOptions)
    firmware_legacy_bios: bool = False
    video_display: str = ""
    video_vnc_display: str = ""  # video.vnc.display (lima.schemas.vnc)
    timezone: str = ""
    plain: bool = False
    containerd_system: bool = False
    containerd_user: bool = False
    upgrade_packages: bool = False
    host_resolver_enabled: bool = False
    host_resolver_ipv6: bool = False
    host_resolver_hosts: Mapping[str, str] = field(default_factory=dict)
    additional_disks: tuple[AdditionalDisk, ...] = ()
    propagate_proxy_env: bool = False
    mount_inotify: bool = False
    message: str = ""
    run_state: str = ""  # x-limapy.runState ("running" when built; lima.states.runstate)
    # The filled document, exactly as `limactl validate --fill` prints it.
    raw: Mapping[str, Any] = field(default_factory=dict)
