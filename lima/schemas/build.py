"""Filled lima.yaml -> InstanceSpec: the last step of `lima.schemas.resolve()`.

The input has passed `validate.check()` after `defaults.fill()`, so every field that has
a builtin default (lima.schemas.fields) is present with its type: this module only converts
(sizes to bytes, ranges to tuples, maps to frozen ones), never judges and never defaults.
A field read with `.get()` here is one that may stay unset (no builtin).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lima.schemas.sizes import parse_size
from lima.schemas.spec import (
    AdditionalDisk,
    FileRef,
    Image,
    InstanceSpec,
    KernelRef,
    Mount,
    PortForward,
    Probe,
    Provision,
    QemuOptions,
    SSHConfig,
    User,
)


def _m(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None


def _file_ref(raw: dict[str, Any], arch: str) -> FileRef:
    return FileRef(location=str(raw["location"]), arch=str(raw["arch"]),
                   digest=_opt_str(raw.get("digest")))


def _image(raw: dict[str, Any]) -> Image:
    arch = str(raw["arch"])
    kernel = None
    if isinstance(raw.get("kernel"), dict):
        k = raw["kernel"]
        kernel = KernelRef(location=str(k["location"]), arch=str(k["arch"]),
                           digest=_opt_str(k.get("digest")), cmdline=str(k.get("cmdline") or ""))
    initrd = _file_ref(raw["initrd"], arch) if isinstance(raw.get("initrd"), dict) else None
    return Image(location=str(raw["location"]), arch=arch, digest=_opt_str(raw.get("digest")),
                 variant=_opt_str(raw.get("variant")), kernel=kernel, initrd=initrd)


def _mount(raw: dict[str, Any]) -> Mount:
    return Mount(
        location=str(raw["location"]),
        mount_point=str(raw["mountPoint"]),
        writable=bool(raw["writable"]),
        sshfs=_frozen(_m(raw.get("sshfs"))),
        nine_p=_frozen(_m(raw.get("9p"))),
        virtiofs=_frozen(_m(raw.get("virtiofs"))),
    )


def _disk(raw: Any) -> AdditionalDisk:
    if isinstance(raw, str):
        return AdditionalDisk(name=raw, format=True)
    fmt = raw.get("format")
    return AdditionalDisk(
        name=str(raw["name"]),
        format=True if fmt is None else bool(fmt),
        fs_type=str(raw.get("fsType") or ""),
        fs_args=tuple(str(a) for a in _l(raw.get("fsArgs"))),
    )


def _provision(raw: dict[str, Any]) -> Provision:
    permissions = raw.get("permissions")
    return Provision(
        mode=str(raw["mode"]),
        script=_opt_str(raw.get("script")),
        path=_opt_str(raw.get("path")),
        content=_opt_str(raw.get("content")),
        expression=_opt_str(raw.get("expression")),
        format=_opt_str(raw.get("format")),
        owner=_opt_str(raw.get("owner")),
        permissions=None if permissions is None else str(permissions),
        overwrite=raw.get("overwrite"),
        user=_opt_str(raw.get("user")),
        playbook=_opt_str(raw.get("playbook")),
        skip_default_dependency_resolution=raw.get("skipDefaultDependencyResolution"),
    )


def _probe(raw: dict[str, Any]) -> Probe:
    return Probe(mode=str(raw["mode"]), script=str(raw["script"]),
                 hint=str(raw.get("hint") or ""), description=str(raw["description"]))


def _port_forward(raw: dict[str, Any]) -> PortForward:
    return PortForward(
        guest_ip=str(raw["guestIP"]),
        guest_ip_must_be_zero=bool(raw.get("guestIPMustBeZero")),
        guest_port=raw.get("guestPort"),
        guest_port_range=_range(raw.get("guestPortRange")),
        guest_socket=raw.get("guestSocket") or None,
        host_ip=str(raw["hostIP"]),
        host_port=raw.get("hostPort"),
        host_port_range=_range(raw.get("hostPortRange")),
        host_socket=raw.get("hostSocket") or None,
        proto=str(raw["proto"]),
        reverse=bool(raw.get("reverse")),
        ignore=bool(raw.get("ignore")),
        static=bool(raw.get("static")),
    )


def build_spec(filled: dict[str, Any], name: str) -> InstanceSpec:
    """The frozen InstanceSpec for a filled, valid document."""
    user = filled["user"]
    ssh = filled["ssh"]
    qemu = filled["vmOpts"]["qemu"]
    containerd = filled["containerd"]
    return InstanceSpec(
        name=name,
        vm_type=str(filled["vmType"]),
        os=str(filled["os"]),
        arch=str(filled["arch"]),
        images=tuple(_image(i) for i in filled["images"]),
        cpus=int(filled["cpus"]),
        memory=parse_size(filled["memory"]),
        disk=parse_size(filled["disk"]),
        mounts=tuple(_mount(m) for m in filled["mounts"]),
        mount_type=str(filled["mountType"]),
        mount_inotify=filled.get("mountInotify") is True,
        ssh=SSHConfig(
            local_port=int(ssh["localPort"]),
            load_dot_ssh_pubkeys=bool(ssh["loadDotSSHPubKeys"]),
            forward_agent=bool(ssh["forwardAgent"]),
            forward_x11=bool(ssh["forwardX11"]),
            forward_x11_trusted=bool(ssh["forwardX11Trusted"]),
        ),
        user=User(
            name=str(user["name"]),
            uid=int(user["uid"]),
            comment=str(user["comment"]),
            home=str(user["home"]),
            shell=str(user["shell"]),
        ),
        provision=tuple(_provision(p) for p in filled["provision"]),
        probes=tuple(_probe(p) for p in filled["probes"]),
        port_forwards=tuple(
            _port_forward(p) for p in filled["portForwards"]
        ),
        env=_frozen({str(k): str(v) for k, v in filled["env"].items()}),
        param=_frozen({str(k): str(v) for k, v in filled["param"].items()}),
        dns=tuple(str(d) for d in filled["dns"]),
        cpu_type=str(qemu["cpuType"].get(str(filled["arch"])) or ""),
        qemu=QemuOptions(
            min_version=_opt_str(qemu.get("minimumVersion")),
            restrict_network=bool(qemu["restrictNetwork"]),
        ),
        firmware_legacy_bios=bool(filled["firmware"]["legacyBIOS"]),
        video_display=str(filled["video"]["display"]),
        video_vnc_display=str((filled["video"].get("vnc") or {}).get("display") or ""),
        timezone=str(filled["timezone"]),
        plain=bool(filled["plain"]),
        containerd_system=bool(containerd["system"]),
        containerd_user=bool(containerd["user"]),
        upgrade_packages=bool(filled["upgradePackages"]),
        host_resolver_enabled=bool(filled["hostResolver"]["enabled"]),
        host_resolver_ipv6=bool(filled["hostResolver"]["ipv6"]),
        host_resolver_hosts=_frozen({str(k): str(v) for k, v in
                                     _m(filled["hostResolver"]["hosts"]).items()
                                     if v is not None}),
        additional_disks=tuple(_disk(d) for d in _l(filled["additionalDisks"])),
        propagate_proxy_env=bool(filled["propagateProxyEnv"]),
        message=str(filled.get("message") or ""),
        run_state=str(_m(filled.get("x-limapy")).get("runState") or "running"),
        raw=filled,
    )
