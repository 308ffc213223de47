"""Filled lima.yaml -> InstanceSpec: the last step of `lima.schemas.resolve()`.

The input has passed `validate.check()` after `defaults.fill()`, so every field has its
type; this module only converts (sizes to bytes, ranges to tuples, maps to frozen ones)
and never judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lima.schemas.sizes import parse_size
from lima.schemas.spec import (
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
    return FileRef(location=str(raw["location"]), arch=str(raw.get("arch") or arch),
                   digest=_opt_str(raw.get("digest")))


def _image(raw: dict[str, Any]) -> Image:
    arch = str(raw.get("arch", ""))
    kernel = None
    if isinstance(raw.get("kernel"), dict):
        k = raw["kernel"]
        kernel = KernelRef(location=str(k["location"]), arch=str(k.get("arch") or arch),
                           digest=_opt_str(k.get("digest")), cmdline=str(k.get("cmdline") or ""))
    initrd = _file_ref(raw["initrd"], arch) if isinstance(raw.get("initrd"), dict) else None
    return Image(location=str(raw["location"]), arch=arch, digest=_opt_str(raw.get("digest")),
                 variant=_opt_str(raw.get("variant")), kernel=kernel, initrd=initrd)


def _mount(raw: dict[str, Any]) -> Mount:
    return Mount(
        location=str(raw["location"]),
        mount_point=str(raw.get("mountPoint") or raw["location"]),
        writable=bool(raw.get("writable")),
        sshfs=_frozen(_m(raw.get("sshfs"))),
        nine_p=_frozen(_m(raw.get("9p"))),
        virtiofs=_frozen(_m(raw.get("virtiofs"))),
    )


def _provision(raw: dict[str, Any]) -> Provision:
    permissions = raw.get("permissions")
    return Provision(
        mode=str(raw.get("mode") or "system"),
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
    return Probe(mode=str(raw.get("mode") or "readiness"), script=str(raw.get("script") or ""),
                 hint=str(raw.get("hint") or ""), description=str(raw.get("description") or ""))


def _port_forward(raw: dict[str, Any]) -> PortForward:
    return PortForward(
        guest_ip=str(raw.get("guestIP") or "127.0.0.1"),
        guest_ip_must_be_zero=bool(raw.get("guestIPMustBeZero")),
        guest_port=raw.get("guestPort"),
        guest_port_range=_range(raw.get("guestPortRange")),
        guest_socket=raw.get("guestSocket") or None,
        host_ip=str(raw.get("hostIP") or "127.0.0.1"),
        host_port=raw.get("hostPort"),
        host_port_range=_range(raw.get("hostPortRange")),
        host_socket=raw.get("hostSocket") or None,
        proto=str(raw.get("proto") or "tcp"),
        reverse=bool(raw.get("reverse")),
        ignore=bool(raw.get("ignore")),
        static=bool(raw.get("static")),
    )


def build_spec(filled: dict[str, Any], name: str) -> InstanceSpec:
    """The frozen InstanceSpec for a filled, valid document."""
    user = _m(filled.get("user"))
    ssh = _m(filled.get("ssh"))
    qemu = _m(_m(filled.get("vmOpts")).get("qemu"))
    containerd = _m(filled.get("containerd"))
    return InstanceSpec(
        name=name,
        vm_type=str(filled.get("vmType") or "qemu"),
        os=str(filled.get("os") or "Linux"),
        arch=str(filled["arch"]),
        images=tuple(_image(i) for i in _l(filled.get("images")) if isinstance(i, dict)),
        cpus=int(filled["cpus"]),
        memory=parse_size(filled["memory"]),
        disk=parse_size(filled["disk"]),
        mounts=tuple(_mount(m) for m in _l(filled.get("mounts")) if isinstance(m, dict)),
        mount_type=str(filled.get("mountType") or "reverse-sshfs"),
        ssh=SSHConfig(
            local_port=int(ssh.get("localPort") or 0),
            load_dot_ssh_pubkeys=bool(ssh.get("loadDotSSHPubKeys")),
            forward_agent=bool(ssh.get("forwardAgent")),
            forward_x11=bool(ssh.get("forwardX11")),
            forward_x11_trusted=bool(ssh.get("forwardX11Trusted")),
        ),
        user=User(
            name=str(user["name"]),
            uid=int(user["uid"]),
            comment=str(user.get("comment") or ""),
            home=str(user["home"]),
            shell=str(user.get("shell") or "/bin/bash"),
        ),
        provision=tuple(_provision(p) for p in _l(filled.get("provision")) if isinstance(p, dict)),
        probes=tuple(_probe(p) for p in _l(filled.get("probes")) if isinstance(p, dict)),
        port_forwards=tuple(
            _port_forward(p) for p in _l(filled.get("portForwards")) if isinstance(p, dict)
        ),
        env=_frozen({str(k): str(v) for k, v in _m(filled.get("env")).items()}),
        param=_frozen({str(k): str(v) for k, v in _m(filled.get("param")).items()}),
        dns=tuple(str(d) for d in _l(filled.get("dns"))),
        cpu_type=str(_m(qemu.get("cpuType")).get(str(filled["arch"])) or ""),
        qemu=QemuOptions(
            min_version=_opt_str(qemu.get("minimumVersion")),
            restrict_network=bool(qemu.get("restrictNetwork")),
        ),
        firmware_legacy_bios=bool(_m(filled.get("firmware")).get("legacyBIOS")),
        video_display=str(_m(filled.get("video")).get("display") or "none"),
        timezone=str(filled.get("timezone") or ""),
        plain=bool(filled.get("plain")),
        containerd_system=bool(containerd.get("system")),
        containerd_user=bool(containerd.get("user")),
        upgrade_packages=bool(filled.get("upgradePackages")),
        host_resolver_enabled=bool(_m(filled.get("hostResolver")).get("enabled", True)),
        propagate_proxy_env=bool(filled.get("propagateProxyEnv", True)),
        message=str(filled.get("message") or ""),
        raw=filled,
    )
