"""`limactl disk` verbs without a guest: create, list, resize (grow only), delete, unlock,
with Lima's messages. A data disk attached to a guest (additionalDisks: formatted and
mounted at first use, kept across a restart, refused to a second instance while in use)
is checked on the shared Debian instance (test_debian_shared.py): the boot script needs
sfdisk, mkfs.ext4 and udev's by-label links, which the tiny guest lacks.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.conftest import Limactl

pytestmark = pytest.mark.integration

GiB = 1 << 30


def settle(limactl: Limactl, name: str) -> None:
    """The first shell of a guest that just came up under a loaded TCG host may lose its
    ssh master; give it three tries before the checks that count."""
    for _ in range(3):
        if limactl("shell", name, "true", check=False).returncode == 0:
            return
        time.sleep(5)
    limactl("shell", name, "true")


def disk_json(limactl: Limactl) -> dict[str, dict[str, object]]:
    out = limactl("disk", "list", "--json").stdout
    return {d["name"]: d for d in map(json.loads, out.splitlines())}


def test_disk_verbs_without_guests(limactl: Limactl) -> None:
    made = limactl("disk", "create", "scratch", "--size", "64MiB", "--format", "raw")
    assert "Creating raw disk `scratch` with size 64MiB" in made.stderr
    data = limactl.home / "_disks" / "scratch" / "datadisk"
    assert data.stat().st_size == 64 << 20
    again = limactl("disk", "create", "scratch", "--size", "1GiB", check=False)
    assert again.returncode == 1
    assert "disk `scratch` already exists" in again.stderr
    bad = limactl("disk", "create", "x", "--size", "1GiB", "--format", "vmdk", check=False)
    assert "disk format `vmdk` not supported, use `qcow2` or `raw` instead" in bad.stderr
    assert not (limactl.home / "_disks" / "x").exists()

    limactl("disk", "create", "q", "--size", "1GiB")
    listed = disk_json(limactl)
    assert listed["q"]["format"] == "qcow2" and listed["q"]["size"] == GiB
    assert listed["scratch"] == {
        "name": "scratch", "size": 64 << 20, "format": "raw",
        "dir": str(limactl.home / "_disks" / "scratch"), "instance": "", "instanceDir": "",
        "mountPoint": "/mnt/lima-scratch"}
    table = limactl("disk", "ls").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0].strip()) == ["NAME", "SIZE", "FORMAT", "DIR",
                                                      "IN-USE-BY"]
    assert re.split(r"\s{2,}", table[1].strip())[:3] == ["q", "1GiB", "qcow2"]

    shrink = limactl("disk", "resize", "q", "--size", "512MiB", check=False)
    assert shrink.returncode == 1
    assert "is less than the current disk size `1GiB`" in shrink.stderr
    limactl("disk", "resize", "q", "--size", "2GiB")
    assert disk_json(limactl)["q"]["size"] == 2 * GiB

    gone = limactl("disk", "delete", "nosuch", "q")
    assert "Ignoring non-existent disk `nosuch`" in gone.stderr
    assert "Deleted `q`" in gone.stderr
    assert not (limactl.home / "_disks" / "q").exists()
    unlocked = limactl("disk", "unlock", "scratch")
    assert "Ignoring unlocked disk `scratch`" in unlocked.stderr
