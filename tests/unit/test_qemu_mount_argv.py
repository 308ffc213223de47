"""The mount devices on the QEMU command line (9p `-virtfs`, virtiofs vhost-user-fs): pure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lima.schemas.spec import Mount
from tests.unit.test_qemu_argv import GiB, build, make_spec, one, values


def tag(location: str, mount_point: str) -> str:
    return "lima-" + hashlib.sha256(f"{location}:{mount_point}".encode()).hexdigest()[:16]


@pytest.fixture
def inst(tmp_path: Path) -> Path:
    d = tmp_path / "default"
    d.mkdir()
    return d


MOUNTS = (
    Mount(location="/home/alice", mount_point="/home/alice", writable=False,
          nine_p={"securityModel": "none", "protocolVersion": "9p2000.L", "msize": "128KiB",
                  "cache": "fscache"}),
    Mount(location="/tmp/a,b", mount_point="/mnt/ab", writable=True,
          nine_p={"securityModel": "mapped-xattr", "cache": "mmap"},
          virtiofs={"queueSize": 512}),
)


def test_9p_one_virtfs_device_per_mount(inst: Path) -> None:
    argv = build(inst, make_spec(mount_type="9p", mounts=MOUNTS))
    assert values(argv, "-virtfs") == [
        f"local,mount_tag={tag('/home/alice', '/home/alice')},path=/home/alice,"
        "security_model=none,readonly=on",
        # a comma in the host path is doubled; a writable mount has no readonly=on
        f"local,mount_tag={tag('/tmp/a,b', '/mnt/ab')},path=/tmp/a,,b,security_model=mapped-xattr",
    ]
    assert "vhost-user-fs-pci" not in " ".join(argv)
    assert values(argv, "-object") == [] and values(argv, "-numa") == []


def test_same_location_twice_gets_two_tags(inst: Path) -> None:
    mounts = (Mount(location="/h", mount_point="/a"), Mount(location="/h", mount_point="/b"))
    argv = build(inst, make_spec(mount_type="9p", mounts=mounts))
    tags = [v.split(",")[1] for v in values(argv, "-virtfs")]
    assert tags == [f"mount_tag={tag('/h', '/a')}", f"mount_tag={tag('/h', '/b')}"]


def test_virtiofs_vhost_user_devices_and_shared_memory(inst: Path) -> None:
    argv = build(inst, make_spec(mount_type="virtiofs", mounts=MOUNTS, memory=2 * GiB))
    devices = [d for d in values(argv, "-device") if d.startswith("vhost-user-fs-pci")]
    assert devices == [
        f"vhost-user-fs-pci,queue-size=1024,chardev=char-virtiofs-0,"
        f"tag={tag('/home/alice', '/home/alice')}",
        f"vhost-user-fs-pci,queue-size=512,chardev=char-virtiofs-1,"
        f"tag={tag('/tmp/a,b', '/mnt/ab')}",
    ]
    chardevs = [c for c in values(argv, "-chardev") if c.startswith("socket,id=char-virtiofs")]
    assert chardevs == [f"socket,id=char-virtiofs-{i},path={inst.absolute()}/virtiofsd-{i}.sock"
                        for i in range(2)]
    # vhost-user needs the guest's RAM shared with virtiofsd, as large as -m.
    assert one(argv, "-m") == "2048"
    assert one(argv, "-object") == f"memory-backend-memfd,id=mem,size={2 * GiB},share=on"
    assert one(argv, "-numa") == "node,memdev=mem"
    assert values(argv, "-virtfs") == []


@pytest.mark.parametrize("mount_type", ["reverse-sshfs", "9p", "virtiofs"])
def test_no_mounts_no_devices(inst: Path, mount_type: str) -> None:
    argv = build(inst, make_spec(mount_type=mount_type, mounts=()))
    assert values(argv, "-virtfs") == [] and values(argv, "-object") == []
    assert not any("vhost-user-fs" in a for a in argv)


def test_reverse_sshfs_adds_no_device(inst: Path) -> None:
    argv = build(inst, make_spec(mount_type="reverse-sshfs", mounts=MOUNTS))
    assert values(argv, "-virtfs") == []
    assert not any("vhost-user-fs" in a for a in argv)
