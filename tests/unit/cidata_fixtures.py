"""InstanceSpec builders for the cidata/identity/ssh tests (built directly from the dataclasses)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lima.schemas.spec import Image, InstanceSpec, Mount, Provision, SSHConfig, User


def make_spec(**overrides: Any) -> InstanceSpec:
    base: dict[str, Any] = {
        "name": "demo",
        "vm_type": "qemu",
        "os": "Linux",
        "arch": "x86_64",
        "images": (Image(location="build:tiny", arch="x86_64"),),
        "cpus": 2,
        "memory": 1 << 30,
        "disk": 10 << 30,
        "mounts": (),
        "mount_type": "reverse-sshfs",
        "ssh": SSHConfig(),
        "user": User(
            name="alice", uid=1001, comment="Alice A", home="/home/alice.linux", shell="/bin/bash"
        ),
    }
    base.update(overrides)
    return InstanceSpec(**base)


def with_ssh(spec: InstanceSpec, **kw: Any) -> InstanceSpec:
    return dataclasses.replace(spec, ssh=dataclasses.replace(spec.ssh, **kw))


__all__ = ["Mount", "Provision", "make_spec", "with_ssh"]


def read_iso(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of an ISO by Rock Ridge path: (content, Rock Ridge mode)."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    out: dict[str, tuple[bytes, int]] = {}
    try:
        for dirpath, _dirs, files in iso.walk(rr_path="/"):
            for name in files:
                rr = dirpath.rstrip("/") + "/" + name
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=rr)
                rec = iso.get_record(rr_path=rr)
                out[rr.lstrip("/")] = (buf.getvalue(), rec.rock_ridge.get_file_mode())
    finally:
        iso.close()
    return out


def extract_iso(path: Path, dest: Path) -> None:
    """Unpack an ISO into dest keeping the Rock Ridge permission bits (a fake mounted seed)."""
    for rel, (data, mode) in read_iso(path).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode & 0o7777)
