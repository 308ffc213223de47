"""`limactl snapshot` on real QEMU with the tiny guest, through the real CLI: a snapshot of
the running guest brings back a file in its memory (/tmp is RAM there) and bytes on its
disk; the stopped instance's disk is reverted by qemu-img; a snapshot of an earlier boot
restores into a new one (clock set, a re-attached host agent finds it ready); list shows
the tags, delete removes them, and a disk-only snapshot is not loaded into a running
guest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for
from tests.integration.test_instverbs_tiny import disk_bytes_at, read_at, write_at

BEFORE, AFTER = "limapy-before-the-snapshot", "limapy-after-the-snapshot!"


def tags(limactl: Limactl) -> list[str]:
    return limactl("snapshot", "list", "t", "--quiet").stdout.splitlines()


def test_snapshot_cycle_on_the_tiny_guest(limactl: Limactl, tmp_path: Path) -> None:
    tiny = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", tiny)
    limactl("apply", str(tiny), timeout=300)
    assert tags(limactl) == []

    # Running: savevm takes memory and disk.
    limactl("shell", "t", "sh", "-c", f"echo {BEFORE} > /tmp/file")
    write_at(limactl, "t", 1, BEFORE)
    made = limactl("snapshot", "create", "t", "--tag", "run1")
    assert made.stdout == "" and "Sending HMP savevm command" in made.stderr
    limactl("shell", "t", "sh", "-c", f"echo {AFTER} > /tmp/file")
    write_at(limactl, "t", 1, AFTER)
    assert limactl("shell", "t", "cat", "/tmp/file").stdout.strip() == AFTER

    table = limactl("snapshot", "list", "t").stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "TAG"] and table[1].split()[1] == "run1"
    assert tags(limactl) == ["run1"]
    again = limactl("snapshot", "create", "t", "--tag", "run1", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr

    limactl("snapshot", "apply", "t", "--tag", "run1")
    assert limactl("shell", "t", "cat", "/tmp/file").stdout.strip() == BEFORE
    assert read_at(limactl, "t", 1, len(BEFORE)) == BEFORE
    assert limactl("list", "t", "--format", "{{.Status}}").stdout.strip() == "Running"

    # Stopped: qemu-img reverts the disk (the VM state in run1 is not used).
    write_at(limactl, "t", 1, AFTER)
    limactl("stop", "t", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    disk = limactl.home / "t" / "diffdisk"
    assert disk_bytes_at(disk, tmp_path, 1, len(AFTER)) == AFTER.encode()
    limactl("snapshot", "apply", "t", "--tag", "run1")
    assert disk_bytes_at(disk, tmp_path, 1, len(BEFORE)) == BEFORE.encode()
    limactl("snapshot", "create", "t", "--tag", "off1")
    assert tags(limactl) == ["run1", "off1"]

    # A disk-only snapshot is refused while the guest runs (loadvm would leave it paused).
    limactl("start", "t", timeout=300)
    refused = limactl("snapshot", "apply", "t", "--tag", "off1", check=False)
    assert refused.returncode == 1 and "holds no VM state" in refused.stderr
    assert limactl("shell", "t", "true").returncode == 0

    # run1 is from the earlier boot: the guest comes back as it was then, its clock is set
    # to the host's, and its markers count for this boot, so a host agent that attaches
    # later (after a crash) finds the guest ready instead of waiting for a boot.
    limactl("shell", "t", "sh", "-c", f"echo {AFTER} > /tmp/file")
    limactl("snapshot", "apply", "t", "--tag", "run1")
    assert limactl("shell", "t", "cat", "/tmp/file").stdout.strip() == BEFORE
    guest_now = int(limactl("shell", "t", "date", "-u", "+%s").stdout)
    assert abs(guest_now - time.time()) < 5
    this_boot = json.loads((limactl.home / "t" / "status.json").read_text())["iid"]
    markers = limactl("shell", "t", "cat", "/run/lima-ssh-ready", "/run/lima-boot-done")
    assert markers.stdout.split() == [this_boot, this_boot]
    os.kill(int((limactl.home / "t" / "ha.pid").read_text()), signal.SIGKILL)
    assert "t: running" in limactl("start", "t", "--timeout", "60", timeout=120).stdout
    assert limactl("shell", "t", "cat", "/tmp/file").stdout.strip() == BEFORE

    limactl("snapshot", "delete", "t", "--tag", "run1")
    assert tags(limactl) == ["off1"]
    limactl("stop", "t", timeout=120)
    limactl("snapshot", "delete", "t", "--tag", "off1")
    assert tags(limactl) == []
