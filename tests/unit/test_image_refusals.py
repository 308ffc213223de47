"""Pure classification: which host files an image's `qemu-img info` names, and which of
qemu's exit messages are a refusal of its configuration (permanent) or transient."""

from __future__ import annotations

from typing import Any

import pytest

from lima.drivers.images.imagecheck import host_files_named
from lima.drivers.instance import qemu_refused


def test_a_self_contained_qcow2_names_nothing() -> None:
    info: dict[str, Any] = {"format": "qcow2", "filename": "/i/basedisk",
                            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}
    assert host_files_named(info) == []


def test_backing_data_and_extent_files_are_named() -> None:
    info: dict[str, Any] = {
        "filename": "/i/basedisk",
        "backing-filename": "../../etc/passwd",
        "full-backing-filename": "/etc/passwd",
        "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow"}},
    }
    assert host_files_named(info) == [("backing file", "/etc/passwd"),
                                      ("external data file", "/etc/shadow")]
    vmdk: dict[str, Any] = {
        "filename": "/i/disk.vmdk",
        "format-specific": {"type": "vmdk", "data": {"extents": [
            {"filename": "/i/disk.vmdk"}, {"filename": "/dev/sda"}]}},
    }
    assert host_files_named(vmdk) == [("extent file", "/dev/sda")]


@pytest.mark.parametrize("message", [
    "qemu exited with status 1: qemu-system-x86_64: -drive file=/i/diffdisk,if=virtio: "
    "Could not open backing file: Image is not in qcow2 format",
    # Some of qemu's errors carry a bare "qemu:" prefix.
    "qemu exited with status 1: qemu: linux kernel too old to load a ram disk",
    "qemu exited with status 1: qemu-system-x86_64: warning: x | "
    "qemu-system-x86_64: -m 99T: ram size too large",
])
def test_refusals(message: str) -> None:
    assert qemu_refused((message,))


@pytest.mark.parametrize("message", [
    "qemu exited with status 1: qemu-system-x86_64: -netdev user,id=net0: could not set up "
    "host forwarding rule 'tcp:127.0.0.1:2222-:22'",
    'qemu exited with status 1: qemu-system-x86_64: Failed to get "write" lock',
    "qemu exited with status 0",
    "qemu exited with status -9",  # killed: a crash, not a refusal
    "qemu exited with status 1",
    "the guest does not answer",
])
def test_not_refusals(message: str) -> None:
    assert not qemu_refused((message,))
