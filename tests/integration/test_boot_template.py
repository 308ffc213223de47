"""Boot templates with the Debian guest (`build:debian-12`), through the real CLI.

Two instances of one machine, in a template directory of their own: the first one's
first boot pauses after the kernel and cloud-init's import, and is saved as the template;
the second one's first boot loads it. The second is its own machine all the same (boot
id, machine id, ssh host key, MAC, clock), its / is read-write, cloud-init ran its
user-data; the first one's full boot also shows what the image's own boot does (the
preload's stages, the initramfs's cgroup work, sshd's and logind's units). The second
one's next boot (a warm one) pauses early, before any disk is read, and is saved as the
early template, which the first instance's next boot loads: each comes up clean, with
its own disk, machine id, MAC and a new boot id; a reboot inside the guest pauses again
and is let go by the host agent. Run it under `flock /tmp/limapy-debian.lock` (one
Debian guest at a time on the machine).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lima.drivers import boottemplate
from tests.integration.conftest import Limactl, qemu_pids_for
from tests.integration.test_disks import settle

pytestmark = [pytest.mark.integration, pytest.mark.debian, pytest.mark.timeout(1800)]

SPEC = """\
images:
- location: "build:debian-12"
  arch: "x86_64"
cpus: 2
memory: "1GiB"
disk: "8GiB"
mounts: []
vmOpts:
  qemu:
    restrictNetwork: true
provision:
- mode: system
  script: |
    #!/bin/sh
    echo provisioned > /etc/bt-provisioned
"""

FACTS = ("cat /proc/sys/kernel/random/boot_id /etc/machine-id /sys/class/net/eth0/address; "
         "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2; "
         "findmnt -no OPTIONS /; cat /etc/bt-provisioned; date -u +%s; "
         "sudo dmesg | grep -c 'limapy-initramfs: go at'; "
         "sudo dmesg | grep -c 'not reseeded\\|no go line\\|remount of / .* failed"
         "\\|EXT4-fs error'; true")


def facts(limactl: Limactl, name: str) -> dict[str, str]:
    before = time.time()
    out = limactl("shell", name, "sh", "-c", FACTS, timeout=120).stdout.split("\n")
    after = time.time()
    keys = ("boot_id", "machine_id", "mac", "host_key", "root", "provisioned", "clock",
            "go_lines", "bad_lines")
    got = dict(zip(keys, out, strict=False))
    got["skew"] = str(int(got["clock"]) + 0.5 - (before + after) / 2)
    return got


def argv_mac(home: Path, name: str) -> str:
    pid = int((home / name / "qemu.pid").read_text())
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    found = re.search(r"mac=([0-9a-f:]{17})", cmd)
    assert found, cmd
    return found.group(1)


def agent_log(home: Path, name: str) -> str:
    return (home / name / "ha.stderr.log").read_text()


def image_checks(limactl: Limactl, name: str) -> None:
    """What build:debian-12's own boot does, checked on a full boot (not a loaded one)."""
    def sh(script: str) -> list[str]:
        out = limactl("shell", name, "sh", "-c", script, timeout=120).stdout
        return out.splitlines()

    root, host, *status = sh("sudo -n id -u; hostname; cloud-init status --format json")
    assert (root, host) == ("0", f"lima-{name}")
    assert json.loads("\n".join(status)).get("datasource") == "nocloud", status
    # The initramfs turned the slab allocator's memory-cgroup hooks on before the preload
    # started, and left the cgroup mount to systemd (its options, no leftover).
    hooks, mount, leftover, controllers = sh(
        "sudo dmesg | grep -c 'limapy-initramfs: memory cgroup hooks on'; "
        "grep ' /sys/fs/cgroup ' /proc/mounts; ls /sys/fs/cgroup | grep -c limapy-early; "
        "cat /sys/fs/cgroup/cgroup.subtree_control")
    assert hooks == "1" and leftover == "0", (hooks, leftover)
    assert "nsdelegate" in mount.split()[3], mount  # systemd's own mount
    assert "memory" in controllers.split(), controllers
    # The four stages ran in the preload server the initramfs started, each in its unit's
    # cgroup (the network stage's CPU, seconds under TCG, is its unit's).
    *served, cpu_ns = sh("sudo dmesg | grep 'cloud-init-preload: '; "
                         "systemctl show -p CPUUsageNSec --value cloud-init.service")
    stages = [(line.split("cloud-init-preload: ", 1)[1].split(" runs as ")[0],
               line.split(" in /system.slice/", 1)[1].split(" ")[0]) for line in served]
    assert stages == [("'init --local'", "cloud-init-local.service"),
                      ("'init'", "cloud-init.service"),
                      ("'modules --mode=config'", "cloud-config.service"),
                      ("'modules --mode=final'", "cloud-final.service")], served
    assert int(cpu_ns) > 1_000_000_000, cpu_ns
    # /etc is as new as /usr (the image's .updated stamps): systemd-sysusers skipped.
    sysusers, = sh("systemctl show -p ConditionResult --value systemd-sysusers.service")
    assert sysusers == "no", sysusers
    # The startup CPU weights of build_debian.BOOT_WEIGHTS (sshd and systemd-user-sessions
    # just above the stages', so PID 1 starts them first); logind, which hears the ACPI power
    # button a stop presses, is up once cloud-init is done (cloud-final is ordered after
    # multi-user.target, which waits for it).
    *weights, logind, wanted = sh(
        "systemctl show -p StartupCPUWeight --value ssh.service dbus.service "
        "systemd-logind.service systemd-user-sessions.service "
        "systemd-tmpfiles-setup-dev.service systemd-networkd.service; "
        "cloud-init status --wait >/dev/null; systemctl is-active systemd-logind; "
        "systemctl show -p WantedBy --value systemd-logind.service")
    assert [w for w in weights if w] == ["1001", "1000", "1000", "1001", "1000", "1000"], weights
    assert logind == "active", logind
    assert "multi-user.target" in wanted.split(), wanted
    # kmod-static-nodes is masked: the build wrote the file it writes, the same as the
    # running kernel's kmod writes, and systemd-tmpfiles-setup-dev made its nodes.
    masked, nodes, tun = sh(
        "systemctl is-enabled kmod-static-nodes.service; "
        "sudo kmod static-nodes --format=tmpfiles | cmp - /etc/tmpfiles.d/static-nodes.conf"
        " && echo same; test -c /dev/net/tun && echo tun; true")
    assert (masked, nodes, tun) == ("masked", "same", "tun")


def copy_served(limactl: Limactl, name: str) -> None:
    """On a boot paused early, the preload the initramfs started from its own copy of
    cloud-init (imported before the pause) moved into the instance's / and served all four
    stages; the generator was reseeded by it, not by perl."""
    out = limactl("shell", name, "sh", "-c",
                  "sudo dmesg | grep -e 'cloud-init-preload: ' -e 'limapy-initramfs: '",
                  timeout=120).stdout
    assert "serves from the instance's / what it imported" in out, out
    assert out.count(" runs as pid ") == 4, out
    assert "not serving" not in out and "preload from /py" not in out, out
    assert "not reseeded" not in out, out
    # The modules that read none of the instance's devices were loaded before the pause.
    assert "device-free modules loaded before the pause" in out, out
    # A boot after the first: the initramfs copied the CD's meta-data into NoCloud's seed
    # directory, and cloud-init's local stage found its cached instance still the seed's
    # there, without reading the CD.
    same, local = limactl("shell", name, "sh", "-c",
                          "sudo cmp /mnt/lima-cidata/meta-data "
                          "/var/lib/cloud/seed/nocloud/meta-data && echo same; "
                          "sudo awk '/running .init-local./ { s = \"\" } "
                          "/init-local\\/check-cache: SUCCESS/ { s = $0 } END { print s }' "
                          "/var/log/cloud-init.log", timeout=120).stdout.splitlines()
    assert same == "same" and "restored from checked cache" in local, (same, local)


def test_first_boots_share_a_template_and_each_is_its_own_machine(
        limactl: Limactl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    templates = tmp_path / "templates"
    monkeypatch.setenv(boottemplate.ENV_DIR, str(templates))
    yaml = tmp_path / "bt.yaml"
    yaml.write_text(SPEC)
    home = limactl.home

    limactl("start", "--name", "bta", "--tty=false", str(yaml), timeout=1200)
    assert "saved the boot template" in agent_log(home, "bta")
    saved = list(templates.glob("*.state"))
    assert len(saved) == 1 and saved[0].stat().st_size > 50 << 20
    settle(limactl, "bta")
    a = facts(limactl, "bta")
    assert a["go_lines"] == "1" and a["bad_lines"] == "0"
    image_checks(limactl, "bta")
    a_mac = argv_mac(home, "bta")
    limactl("stop", "bta", timeout=300)

    limactl("start", "--name", "btb", "--tty=false", str(yaml), timeout=1200)
    log = agent_log(home, "btb")
    assert "first boot loaded from the boot template" in log, log
    assert saved[0].name.removesuffix(".state") in log
    settle(limactl, "btb")
    b = facts(limactl, "btb")
    for key in ("boot_id", "machine_id", "host_key", "mac"):
        assert a[key] != b[key], key
    assert b["mac"] == argv_mac(home, "btb") != a_mac
    assert b["root"].split(",")[0] == "rw"
    assert b["provisioned"] == "provisioned"
    assert abs(float(b["skew"])) <= 2.0, b
    assert b["go_lines"] == "1" and b["bad_lines"] == "0", b
    status = limactl("shell", "btb", "cloud-init", "status", "--long", timeout=120).stdout
    assert "status: done" in status

    # The next boot of the loaded instance pauses early and is saved; it finds its disk
    # clean.
    limactl("stop", "btb", timeout=300)
    limactl("start", "btb", timeout=1200)
    log = agent_log(home, "btb")
    assert "boot: saved the early boot template" in log and "first boot" not in log, log
    assert len(list(templates.glob("*.state"))) == 2
    settle(limactl, "btb")
    again = facts(limactl, "btb")
    assert again["go_lines"] == "1" and again["bad_lines"] == "0", again
    assert again["machine_id"] == b["machine_id"] and again["boot_id"] != b["boot_id"]
    assert again["root"].split(",")[0] == "rw" and again["provisioned"] == "provisioned"
    copy_served(limactl, "btb")
    limactl("stop", "btb", timeout=300)

    # The other instance's next boot loads it, and is itself (its disk, id and MAC).
    limactl("start", "bta", timeout=1200)
    log = agent_log(home, "bta")
    assert "boot loaded from the early boot template" in log, log
    settle(limactl, "bta")
    early = facts(limactl, "bta")
    assert early["machine_id"] == a["machine_id"] and early["host_key"] != again["host_key"]
    # Its own ssh host key, kept from its first boot (the spec did not change, so neither
    # did cloud-init's instance-id).
    assert early["host_key"] == a["host_key"]
    assert early["boot_id"] not in (a["boot_id"], again["boot_id"])
    assert early["mac"] == a_mac == argv_mac(home, "bta")
    assert early["root"].split(",")[0] == "rw" and early["provisioned"] == "provisioned"
    assert abs(float(early["skew"])) <= 2.0, early
    assert early["go_lines"] == "1" and early["bad_lines"] == "0", early
    status = limactl("shell", "bta", "cloud-init", "status", timeout=120).stdout
    assert "status: done" in status
    copy_served(limactl, "bta")

    # A reboot inside the guest runs the same command line: the initramfs pauses again,
    # and the host agent lets it go (not the guest's own 60 s timeout).
    limactl("shell", "bta", "sudo", "systemctl", "reboot", check=False, timeout=120)
    deadline = time.monotonic() + 300
    rebooted = ""
    while time.monotonic() < deadline:
        got = limactl("shell", "bta", "cat", "/proc/sys/kernel/random/boot_id",
                      check=False, timeout=60)
        if got.returncode == 0 and got.stdout.strip() not in ("", early["boot_id"]):
            rebooted = got.stdout.strip()
            break
        time.sleep(2)
    assert rebooted, "the guest did not come back from its reboot"
    assert "the guest paused again (a reboot): let go" in agent_log(home, "bta")
    after = facts(limactl, "bta")
    assert after["go_lines"] == "1" and after["bad_lines"] == "0", after
    assert after["mac"] == a_mac and abs(float(after["skew"])) <= 2.0, after
    limactl("delete", "-f", "bta", "btb", timeout=300)
    assert qemu_pids_for(home) == []
    assert len(list(templates.glob("*.state"))) == 2  # kept for the next boots
