"""additionalDisks and `limactl disk` on real guests.

A Lima disk made with `limactl disk create` is attached to a Debian guest (build:debian-12:
the boot script needs sfdisk, mkfs.ext4 and udev's by-label links, which the tiny guest
lacks), partitioned, formatted and mounted at /mnt/lima-data at first use; what is written
there survives a restart; while the first instance runs, a second one (the tiny guest) is
refused the disk with the first one's name. The `disk` verbs' refusals (delete and resize
while in use, unlock of a running instance's disk, shrink) are checked on the way. One
Debian boot and one restart: about three minutes under TCG.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl

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
    data = limactl.home / "_disk" / "scratch" / "datadisk"
    assert data.stat().st_size == 64 << 20
    again = limactl("disk", "create", "scratch", "--size", "1GiB", check=False)
    assert again.returncode == 1
    assert "disk `scratch` already exists" in again.stderr
    bad = limactl("disk", "create", "x", "--size", "1GiB", "--format", "vmdk", check=False)
    assert "disk format `vmdk` not supported, use `qcow2` or `raw` instead" in bad.stderr
    assert not (limactl.home / "_disk" / "x").exists()

    limactl("disk", "create", "q", "--size", "1GiB")
    listed = disk_json(limactl)
    assert listed["q"]["format"] == "qcow2" and listed["q"]["size"] == GiB
    assert listed["scratch"] == {
        "name": "scratch", "size": 64 << 20, "format": "raw",
        "dir": str(limactl.home / "_disk" / "scratch"), "instance": "", "instanceDir": "",
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
    assert not (limactl.home / "_disk" / "q").exists()
    unlocked = limactl("disk", "unlock", "scratch")
    assert "Ignoring unlocked disk `scratch`" in unlocked.stderr


def _debian_yaml(tmp_path: Path) -> Path:
    text = (REPO / "examples" / "default.yaml").read_text()
    text = re.sub(r"(?ms)^mounts:\n(?:- .*\n(?:  .*\n)*)", "mounts: []\n", text)
    text += "additionalDisks:\n- data\n"
    f = tmp_path / "d1.yaml"
    f.write_text(text)
    return f


def test_data_disk_mounted_kept_and_refused_to_another(limactl: Limactl,
                                                        tmp_path: Path) -> None:
    limactl("disk", "create", "data", "--size", "1GiB")
    out = limactl("apply", str(_debian_yaml(tmp_path)), timeout=900)
    assert "d1: running" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("degraded") == 0, out.stdout
    settle(limactl, "d1")
    mounts = limactl("shell", "d1", "findmnt", "-n", "-o", "SOURCE,FSTYPE,LABEL",
                     "/mnt/lima-data").stdout.split()
    assert mounts == ["/dev/vdb1", "ext4", "lima-data"]
    limactl("shell", "d1", "sudo", "sh", "-c", "echo kept > /mnt/lima-data/f")
    held = disk_json(limactl)["data"]
    assert (held["instance"], held["instanceDir"]) == ("d1", str(limactl.home / "d1"))
    assert (limactl.home / "_disk" / "data" / "in_use_by").is_symlink()

    # Refusals while d1 runs.
    delete = limactl("disk", "delete", "data", check=False)
    assert delete.returncode == 1
    assert "cannot delete disk `data` in use by instance `d1`" in delete.stderr
    resize = limactl("disk", "resize", "data", "--size", "2GiB", check=False)
    assert resize.returncode == 1
    assert "cannot resize disk `data` used by running instance `d1`" in resize.stderr
    unlock = limactl("disk", "unlock", "data")
    assert "Cannot unlock disk `data` used by running instance `d1`" in unlock.stderr

    # A second instance is refused the disk, naming the holder; nothing of it runs.
    tiny = tmp_path / "d2.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", tiny)
    tiny.write_text(tiny.read_text() + "additionalDisks:\n- data\n")
    second = limactl("apply", str(tiny), check=False, timeout=600)
    assert second.returncode != 0
    assert "could not attach disk `data`: in use by instance `d1`" in second.stderr
    assert disk_json(limactl)["data"]["instance"] == "d1"

    # Restart: the lock is released at stop, taken again at start, the data is there.
    limactl("stop", "d1", timeout=300)
    assert disk_json(limactl)["data"]["instance"] == ""
    limactl("start", "d1", timeout=900)
    settle(limactl, "d1")
    kept = limactl("shell", "d1", "cat", "/mnt/lima-data/f").stdout
    assert kept.strip() == "kept"
    limactl("stop", "d1", timeout=300)

    # Stopped: the disk grows; a plain delete skips a disk stopped instances reference.
    limactl("disk", "resize", "data", "--size", "2GiB")
    assert disk_json(limactl)["data"]["size"] == 2 * GiB
    skipped = limactl("disk", "delete", "data")
    assert "Skipping deleting disk `data`" in skipped.stderr
    assert "`d1`" in skipped.stderr
    assert (limactl.home / "_disk" / "data" / "datadisk").is_file()
    # Deleting the instances never touches the disk.
    limactl("delete", "-f", "d1", timeout=300)
    limactl("delete", "-f", "d2", timeout=300, check=False)
    assert (limactl.home / "_disk" / "data" / "datadisk").is_file()
    limactl("disk", "delete", "--force", "data")
    assert not (limactl.home / "_disk" / "data").exists()
