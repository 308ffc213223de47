"""End to end on examples/default.yaml: the real cloud-init Debian guest built here
(`build:debian-12`), with the home mount, provisioning, stop, start again and delete."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

pytestmark = pytest.mark.debian


def test_default_example_end_to_end(limactl: Limactl, tmp_path: Path) -> None:
    f = tmp_path / "deb.yaml"
    shutil.copy(REPO / "examples" / "default.yaml", f)
    out = limactl("apply", str(f), timeout=900)
    assert "deb: running" in out.stdout, out.stderr
    rec = json.loads(limactl("list", "--format", "json", "deb").stdout)
    assert rec["status"] == "Running"
    assert rec["cpus"] == 2

    status = limactl("shell", "deb", "cloud-init", "status", "--long").stdout
    assert "status: done" in status
    assert "DataSourceNoCloud" in status
    # The image's cloud.cfg.d and limapy's user-data pass cloud-init's schema check.
    invalid = limactl("shell", "deb", "sh", "-c",
                      "sudo grep -c 'Invalid cloud-config' /var/log/cloud-init.log || true")
    assert invalid.stdout.strip() == "0", invalid.stdout
    # The shares are boot.sh's (user-data has no `mounts:`): cloud-init's mounts module
    # leaves fstab alone (no rewrite, no `mount -a`, no daemon-reload).
    ci_log = limactl("shell", "deb", "sudo", "cat", "/var/log/cloud-init.log").stdout
    assert "No modifications to fstab needed" in ci_log
    assert "daemon-reload" not in ci_log and "mount', '-a'" not in ci_log
    # build:debian-12 mounts / read-write in its initramfs, with fstab's options (no
    # systemd-remount-fs); eth0 keeps the IPv6 that QEMU's user network announces.
    root = limactl("shell", "deb", "findmnt", "-no", "OPTIONS", "/").stdout.strip().split(",")
    assert "rw" in root and "errors=remount-ro" in root, root
    ipv6 = limactl("shell", "deb", "ip", "-6", "addr", "show", "dev", "eth0").stdout
    assert "scope site" in ipv6 and "tentative" not in ipv6, ipv6
    provisioned = limactl("shell", "deb", "cat", "/etc/limapy-provisioned").stdout
    assert provisioned.startswith("provisioned for ")
    mounts = limactl("shell", "deb", "mount").stdout
    home = str(Path.home())
    # mountType defaults to 9p on QEMU, as in Lima >= 1.0 (the image's kernel has 9p).
    assert any(f" on {home} type 9p (ro," in line for line in mounts.splitlines())
    first_iid = json.loads((limactl.home / "deb" / "status.json").read_text())["iid"]
    host_key = limactl("shell", "deb", "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout

    # The host agent dies (kill -9): the next apply attaches a new one to the same qemu,
    # the guest is not rebooted, and the home mount works again.
    boot_id = limactl("shell", "deb", "cat", "/proc/sys/kernel/random/boot_id").stdout
    qemu = qemu_pids_for(limactl.home)
    os.kill(int((limactl.home / "deb" / "ha.pid").read_text()), signal.SIGKILL)
    out = limactl("apply", str(f), timeout=300)
    assert out.returncode == 0, out.stderr
    assert qemu_pids_for(limactl.home) == qemu
    assert limactl("shell", "deb", "cat", "/proc/sys/kernel/random/boot_id").stdout == boot_id
    # sudo: 9p shows the host's modes, and a root host's home is 0700.
    listing = limactl("shell", "deb", "sudo", "ls", "-d", home + "/.").stdout
    assert listing.strip() == home + "/."
    mounts = limactl("shell", "deb", "mount").stdout
    assert sum(f" on {home} type 9p (ro," in line for line in mounts.splitlines()) == 1

    limactl("stop", "deb", timeout=300)
    assert json.loads(limactl("list", "--format", "json", "deb").stdout)["status"] == "Stopped"
    # The guest powered off on the ACPI button (logind heard it): qemu was not killed
    # (the agent attached to it above, so its exit status is not known here).
    agent_log = (limactl.home / "deb" / "ha.stderr.log").read_text()
    assert "qemu exited with status" in agent_log, agent_log[-2000:]
    assert "still runs after powerdown" not in agent_log, agent_log[-2000:]
    assert "QMP powerdown failed" not in agent_log, agent_log[-2000:]
    assert qemu_pids_for(limactl.home) == []

    limactl("start", "deb", timeout=900)
    assert json.loads((limactl.home / "deb" / "status.json").read_text())["iid"] != first_iid
    again = limactl("shell", "deb", "cat", "/etc/limapy-provisioned").stdout
    assert again.startswith("provisioned for ")
    # A new boot IID, but the same spec: cloud-init saw the same instance (meta-data's
    # instance-id is a digest of what it reads) and did not run its once-per-instance
    # modules again; the guest kept its ssh host key.
    instances = limactl("shell", "deb", "ls", "/var/lib/cloud/instances").stdout.split()
    assert len(instances) == 1 and instances[0].startswith("iid-seed-"), instances
    ci_log = limactl("shell", "deb", "sudo", "cat", "/var/log/cloud-init.log").stdout
    assert "config-users-groups already ran" in ci_log
    assert limactl("shell", "deb", "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout == host_key

    limactl("delete", "-f", "deb", timeout=300)
    assert not (limactl.home / "deb").exists()
    assert qemu_pids_for(limactl.home) == []
