"""Recipe `build:debian-12`: a real Debian 12 (bookworm) cloud-init guest from Debian packages.

Called by build.build_image("debian-12"). debootstrap (minbase) from this machine's
configured Debian mirror (or $LIMA_DEBIAN_MIRROR) with systemd, openssh-server, sudo,
cloud-init (NoCloud only), python3, sshfs/fuse3 and friends; then Debian's generic kernel
(fetched by the host's apt: the cloud kernel build:tiny uses has no 9p) with an initramfs
of our own: busybox, the modules mounting / needs (virtio_blk, ext4) and
lima/assets/debian/initramfs-init (and, in initrd.early, for boots paused early, a copy of
what importing cloud-init reads); 9p, virtiofs, the SCSI CD and the rest load from /
(`mountType: 9p`). Boot-time trims (units, generators, drivers, cloud-init modules) are
measured by benchmarks/debian_boot.py; the README lists the figures.
The root file system becomes an ext4 image with `mkfs.ext4 -d` (no loop mounts), then a
compressed qcow2. Needs root (debootstrap, chroot).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from lima.drivers import cloudconfig
from lima.drivers.images import build, pvh
from lima.drivers.images.build_tiny import Initramfs, add_modules

# Part of the cache key: bump it whenever a change here alters the product.
RECIPE_VERSION = "debian-12-35"
SUITE = "bookworm"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "debian"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_LABEL = "lima-root"
# The ext4 file system is the whole disk (no partition table): when `disk:` is larger,
# cloud-init's resizefs (each boot) runs resize2fs /dev/vda and / grows; no growpart.
ROOT_SIZE = "4G"
# / is mounted read-write by the initramfs, with fstab's options, and never fsck'd at boot
# (fstab's pass 0; ext4's journal makes an unclean stop safe): systemd-fsck-root and
# systemd-remount-fs cost about 4 s under TCG, on the way to cloud-init's first stage.
ROOT_OPTIONS = "errors=remount-ro"
# limapy.pausable(.early): the initramfs knows `limapy.pause` and `limapy.pause.early`
# (lima.drivers.boottemplate), which the host agent adds to an instance's boots; the guest
# itself ignores the words.
CMDLINE = (f"root=LABEL={ROOT_LABEL} rw rootflags={ROOT_OPTIONS} console=ttyS0 "
           "net.ifnames=0 quiet limapy.pausable limapy.pausable.early")

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "sudo",
    "cloud-init",
    "python3",
    # debootstrap does not resolve the virtual package python3-cryptography needs.
    "python3-cffi-backend",
    "iproute2",
    "systemd-resolved",
    "netbase",
    "ca-certificates",
    "kmod",
    "initramfs-tools",
    "zstd",
    "sshfs",
    "fuse3",
    # limactl copy --backend=rsync (and auto) needs rsync on both ends.
    "rsync",
    # sfdisk: additionalDisks are partitioned (GPT) before mkfs, as Lima does.
    "fdisk",
    # the kernel .deb is installed afterwards with dpkg; these are what it depends on.
    "linux-base",
)
# The generic kernel, not linux-image-cloud-amd64: the cloud kernel is built without 9p
# (CONFIG_NET_9P is not set), which `mountType: 9p` (Lima's default on QEMU) needs.
KERNEL_META_PACKAGE = "linux-image-amd64"
# What mounting / needs, the cidata CD, the NIC and 9p's transport; the rest (the 9p file
# system, virtiofs...) loads from the root file system, by udev or `mount -t`, once
# systemd runs. The CD (virtio_scsi, sr_mod, isofs) is here so /dev/sr0 exists before
# cloud-init's local stage looks for its seed: udev's coldplug, which would load them
# otherwise, runs alongside that stage (at a lower CPU weight), and a local stage that
# finds no seed leaves the network unconfigured until systemd-networkd-wait-online times
# out (2 minutes). The NIC (virtio_net) is here
# so eth0 exists when systemd-networkd starts: from coldplug it came seconds later.
# crc32c_generic: ext4's and jbd2's metadata checksums ask the crypto API for crc32c, and
# the initramfs has no modprobe to load it on demand. 9pnet_virtio (the 9p shares'
# transport) is here so each share's channel exists when systemd mounts fstab's share
# lines (a boot after the first): the first 9p mount loaded it, and a second mount made
# meanwhile found no channel for its tag ("no channels available"), failed, and was left
# to boot.sh.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_scsi",
                     "sr_mod", "isofs", "virtio_net", "9pnet_virtio")
# The initramfs (busybox + initramfs-init + INITRAMFS_MODULES) replaces the one Debian's
# initramfs-tools builds: that one runs udev and its script framework first, about 3 s
# longer to the mount of / under TCG. It is written uncompressed: unpacking zstd cost the
# kernel about 0.8 s.
BUSYBOX_PACKAGE = "busybox-static"
# Drivers of devices a QEMU q35 machine has but limapy never uses (the ICH9 SATA, LPC and
# SMBus controllers, the PC speaker) and wireless (no radio in a VM; loaded by
# systemd-rfkill otherwise): `blacklist` stops udev loading them by alias; a `modprobe
# NAME` by hand still works. Each costs about a second of guest CPU under TCG.
MODULE_BLACKLIST = ("ahci", "lpc_ich", "i2c_i801", "pcspkr", "cfg80211")
# Units that cost boot time and do nothing useful in a limapy guest: e2scrub needs LVM
# (the image has none); apt's timers would update and upgrade packages behind the user's
# back (lima.yaml's upgradePackages is the knob for that).
# modprobe@drm (wanted by logind) loads the DRM core for a GPU the guest does not have.
# modprobe@dm_mod/loop/efi_pstore load modules nothing here uses at boot (device-mapper
# and loop devices load theirs when first opened; no EFI). systemd-remount-fs would
# remount / with the options the initramfs already used (ROOT_OPTIONS).
# systemd-pcrphase(-sysinit) measure boot phases into a TPM2 for a unified kernel image
# booted by EFI: a limapy guest has neither, so they are always skipped, but only when PID
# 1 gets to their jobs, at the default CPU weight, and systemd-user-sessions (so every
# login) waited for that: 1.2 s after sshd's start under TCG. getty-static starts gettys
# on systems without D-Bus (this one has it): skipped as well, one job fewer at that time.
# systemd-network-generator turns ip=, nameserver= and the like on the kernel command line
# into networkd files: limapy's command line has none (the network comes from cidata's
# network-config), and networkd waited for it, on the way to the network stage.
# kmod-static-nodes writes, at every boot, the device nodes of the image's one kernel whose
# modules load when the node is first opened (/dev/fuse, /dev/net/tun, /dev/loop-control,
# ...): the build writes the same file once (STATIC_NODES; kmod itself cannot, as it
# reads the running kernel's modules). It was the first step of the boot's critical path
# on a warm start: 0.7-1.2 s under TCG, before systemd-tmpfiles-setup-dev and udevd.
MASKED_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer",
                "apt-daily-upgrade.timer", "modprobe@drm.service", "modprobe@dm_mod.service",
                "modprobe@loop.service", "modprobe@efi_pstore.service",
                "systemd-remount-fs.service", "kmod-static-nodes.service",
                "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
                "getty-static.service", "systemd-network-generator.service")
# In /etc, under the name kmod-static-nodes gives its file in /run: if the unit is
# unmasked, this one still wins (tmpfiles.d(5)) rather than both being read.
STATIC_NODES = "etc/tmpfiles.d/static-nodes.conf"
# systemd runs every generator before it starts any unit, and again on each daemon-reload
# (cloud-init's mounts module does one): about 0.15-0.3 s of guest CPU each under TCG.
# These have nothing to generate in a limapy guest (no LUKS, dm-integrity, dm-verity,
# hibernation, GPT auto-discovery, offline updates, SysV scripts or rc.local). Kept:
# fstab, getty, debug (systemd.mask= etc. on the kernel command line) and cloud-init's.
# udev rules for hardware a limapy guest never has (limapy gives QEMU no USB, sound,
# camera, joystick, sensor, FIDO, tape, InfiniBand or MTD device; its serial ports have no
# by-id): masked in /etc/udev/rules.d. Every one of a boot's 513 coldplug events walks
# all the rules. Kept: the rules of the display, keyboard and pointer `video.display`
# adds, the power button (60-input-id, 70-power-switch), logind's seats and uaccess,
# block devices, the NIC, module loading and systemd's device units. A full coldplug in an
# idle guest cost udevd 2.7-3.3 s of CPU with every rule, 2.3-2.7 s with a larger set
# masked (these, the display and pointer rules and the seat rules).
MASKED_UDEV_RULES = (
    "60-autosuspend.rules", "60-fido-id.rules", "60-infiniband.rules",
    "60-persistent-alsa.rules", "60-persistent-storage-tape.rules", "60-persistent-v4l.rules",
    "60-sensor.rules", "60-serial.rules", "66-azure-ephemeral.rules", "70-camera.rules",
    "70-joystick.rules", "75-probe_mtd.rules", "78-sound-card.rules", "96-e2scrub.rules",
)  # fmt: skip
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-integritysetup-generator",
    "systemd-veritysetup-generator", "systemd-hibernate-resume-generator",
    "systemd-gpt-auto-generator", "systemd-system-update-generator",
    "systemd-run-generator", "systemd-sysv-generator", "systemd-rc-local-generator",
)  # fmt: skip

CLOUD_CFG = """# limapy build:debian-12: cidata is the only datasource (never probe a network).
datasource_list: [NoCloud, None]
# An RSA host key costs seconds under TCG.
ssh_genkeytypes: [ed25519]
# Only the modules limapy's user-data can use (users, keys, hostname, mounts, growing /,
# CA certificates, timezone, packages, bootcmd): every stage imports the modules it
# lists, and Debian's default list runs grub-dpkg (no GRUB here), apt-configure (it would
# replace the image's sources.list), keys-to-console and more, seconds each under TCG.
# mounts stays in the config stage, once sshd is started: limapy's user-data has no
# `mounts:` (boot.sh puts the shares in fstab and waits for them before provisioning),
# but one in other user-data has it write fstab and run `systemctl daemon-reload`,
# 2.5-4 s under TCG, which would hold back sshd (ordered after the network stage).
cloud_init_modules: [migrator, seed_random, bootcmd, write-files, growpart, resizefs,
  set_hostname, update_hostname, update_etc_hosts, ca-certs, users-groups, ssh]
cloud_config_modules: [mounts, set-passwords, timezone, runcmd]
cloud_final_modules: [package-update-upgrade-install, write-files-deferred,
  scripts-vendor, scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user,
  final-message, power-state-change]
"""

# systemd-resolved's LLMNR and mDNS listen on port 5355 on every address, which the
# host agent would forward to the host; a limapy guest resolves through the host.
RESOLVED_CONF = """[Resolve]
LLMNR=no
MulticastDNS=no
"""

FILES: dict[str, tuple[int, str]] = {
    "etc/cloud/cloud.cfg.d/90-lima.cfg": (0o644, CLOUD_CFG),
    "etc/fstab": (0o644, f"LABEL={ROOT_LABEL}\t/\text4\tdefaults,{ROOT_OPTIONS}\t0\t0\n"),
    # eth0 is QEMU's user-mode network, where the guest is alone: duplicate address
    # detection only delays its IPv6 addresses, and systemd-networkd calls the link
    # configured (what network-online.target, so cloud-init's network stage and sshd, wait
    # for) only once they are usable: about 2-3 s under TCG.
    "etc/sysctl.d/60-lima-eth0.conf": (0o644, "net.ipv6.conf.eth0.accept_dad = 0\n"),
    "etc/hostname": (0o644, "debian\n"),
    "etc/initramfs-tools/conf.d/lima.conf": (0o644, "MODULES=list\nCOMPRESS=zstd\n"),
    "etc/initramfs-tools/modules": (0o644, "".join(m + "\n" for m in INITRAMFS_MODULES)),
    "etc/modprobe.d/lima-blacklist.conf": (
        0o644, "".join(f"blacklist {m}\n" for m in MODULE_BLACKLIST)),
    "etc/systemd/resolved.conf.d/lima.conf": (0o644, RESOLVED_CONF),
    # What cloud-init's set-passwords writes for `ssh_pwauth: false` (this file, as
    # sshd_config includes sshd_config.d): finding it already there, it does not restart
    # sshd in the middle of the boot, while the host agent logs in.
    "etc/ssh/sshd_config.d/50-cloud-init.conf": (0o600, "PasswordAuthentication no\n"),
    # ssh.service first runs `sshd -t` (a whole sshd exec, about 0.5 s under TCG on the
    # path to the host's first login) to test the configuration that sshd itself reads
    # and refuses just the same a moment later, failing the unit alike (exit 255, no
    # restart). `systemctl reload ssh` keeps its test (ExecReload).
    "etc/systemd/system/ssh.service.d/limapy-no-config-test.conf": (
        0o644, "[Service]\nExecStartPre=\n"),
    # sshd -r: a connection's sshd is a fork of the listener, not a new exec of sshd (the
    # binary, its libraries, sshd_config and the host keys loaded again). Measured in an
    # idle guest under TCG: a login took 0.55-0.75 s, 0.23-0.34 s with -r; the first login
    # after a resume, and every probe that reaches sshd during a boot, save as much. The
    # price: every connection's process has the listener's address layout. sshd is reached
    # only through QEMU's user network, whose ssh forward binds 127.0.0.1 on the host
    # (and the guest's other networks, when lima.yaml adds any). Debian's line, plus -r.
    "etc/systemd/system/ssh.service.d/limapy-no-rexec.conf": (
        0o644, "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -r $SSHD_OPTS\n"),
    # Later package installs in the guest skip docs too (the build deletes them).
    "etc/dpkg/dpkg.cfg.d/01-lima-nodoc": (
        0o644,
        "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
        "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n",
    ),
}
# cloud-init's systemd generator decides at every boot whether cloud-init runs: it runs
# ds-identify, a long shell script that reads DMI, blkid and the config to pick the
# datasources, about 0.6 s under TCG while PID 1 waits for its generators, with one vCPU
# busy. This image has one datasource (CLOUD_CFG: NoCloud, then None), so the generator
# of the same name in /etc (which systemd runs instead of /lib's) only keeps the switches:
# `cloud-init=disabled` on the kernel command line or /etc/cloud/cloud-init.disabled turn
# cloud-init off; otherwise cloud-init.target is wanted and /run/cloud-init/cloud.cfg says
# what ds-identify would have written. The LIMAPY_* variables are for the tests.
CLOUD_INIT_GENERATOR = """#!/bin/sh
# limapy build:debian-12: cloud-init's generator without ds-identify (see
# /usr/lib/systemd/system-generators/cloud-init-generator for the full one).
run="${LIMAPY_RUN_CLOUD_INIT:-/run/cloud-init}"
cmdline=""
read -r cmdline <"${LIMAPY_PROC_CMDLINE:-/proc/cmdline}"
mkdir -p "$run"
rm -f "$run/enabled" "$run/disabled"
case " $cmdline " in
*" cloud-init=disabled "*) : >"$run/disabled"; exit 0 ;;
esac
if [ -e "${LIMAPY_ETC_CLOUD:-/etc/cloud}/cloud-init.disabled" ]; then
	: >"$run/disabled"
	exit 0
fi
mkdir -p "$2/multi-user.target.wants"
ln -snf /lib/systemd/system/cloud-init.target "$2/multi-user.target.wants/cloud-init.target"
echo "datasource_list: [ NoCloud, None ]" >"$run/cloud.cfg"
: >"$run/enabled"
"""
FILES["etc/systemd/system-generators/cloud-init-generator"] = (0o755, CLOUD_INIT_GENERATOR)
# cloud-init's four boot stages, each a unit whose ExecStart starts /usr/bin/cloud-init:
# under TCG, each start spends about 5 s of guest CPU importing cloud-init before the
# stage does anything. The image runs them in one preloaded process instead
# (lima/assets/debian/cloud-init-preload, started by the initramfs so that its import
# runs while systemd starts): each unit's ExecStart becomes cloud-init-stage with the
# same arguments, and the stage runs cloud-init's own main() in a fork of it, moved into
# the unit's cgroup. The units, their order, the modules and the user-data semantics are
# cloud-init's own. The stages are the boot's critical path (sshd waits for the network
# stage, Running for the final one) while udev's coldplug, journald, PID 1, then sshd,
# logind and boot.sh contend for the same two vCPUs under TCG: while the system starts,
# they get ten times the default CPU weight.
CLOUD_INIT_STAGES = {
    "cloud-init-local.service": "init --local",
    "cloud-init.service": "init",
    "cloud-config.service": "modules --mode=config",
    "cloud-final.service": "modules --mode=final",
}
INITRAMFS_INIT = "initramfs-init"
PRELOAD_DIR = "usr/lib/limapy"
PRELOAD_ASSETS = ("cloud-init-preload", "cloud-init-stage")
REGEX_TABLE = "cloud-init-regex-table"
# The initramfs's copy of what importing cloud-init reads (the interpreter, its libraries,
# the modules' sources and compiled files, cloud-init's and jsonschema's schemas): under
# PY_COPY, the image's own paths and symlinks. A boot paused early imports cloud-init from
# it before the pause (see lima/assets/debian/initramfs-init). PY_MANIFEST, in the copy,
# lists its files as the image has them ("SIZE MTIME PATH"): the preload checks them
# against the instance's disk before it serves a stage.
PY_COPY = "py"
PY_FILES = "cloud-init-preload.list"
PY_MANIFEST = f"{PRELOAD_DIR}/cloud-init-preload.files"
# While the system starts, these get more than the default CPU weight (100), as
# cloud-init's stages and boot.sh have (1000). sshd (and each connection's process: the
# host agent's first login and its looks at the boot's markers run in ssh.service's
# cgroup): its start contends with D-Bus's, logind's, the gettys' and the config stage's.
# D-Bus and logind are on the way to cloud-init's final stage too (multi-user.target
# waits for logind, which needs the bus), and systemd-user-sessions lets users log in: at
# the default weight, logind took 5-10 s to start while the stages, sshd and boot.sh had
# ten times its share of the two vCPUs, for about 1 s of CPU it needed.
# PID 1 also starts the jobs it may run in the order of their units' CPU weight, highest
# first, then by name: when the network stage ended, cloud-config, dbus and limapy's
# lima-boot and lima-mounts units (1000 each) were started before ssh and
# systemd-user-sessions, 0.15-0.5 s each under TCG, and sshd answered 1.2 s after the
# stage. At 1001 those two start first, with the stages' share of the CPU: at 2000 the
# logins and whatever a login runs (a poller's `sleep` loop, the host agent's looks)
# also took CPU from the config and final stages, and cloud-init finished later.
# systemd-tmpfiles-setup-dev (the static device nodes udevd waits for) and
# systemd-networkd are on the way from PID 1's start to the network stage: udevd, the
# network, its online wait (the network stage's), sshd.
STAGE_WEIGHT = 1000  # cloud-init's stages (below)
LOGIN_WEIGHT = max(STAGE_WEIGHT, cloudconfig.BOOT_UNIT_WEIGHT) + 1
BOOT_WEIGHTS = {"ssh.service": LOGIN_WEIGHT, "systemd-user-sessions.service": LOGIN_WEIGHT,
                "dbus.service": STAGE_WEIGHT, "systemd-logind.service": STAGE_WEIGHT,
                "systemd-tmpfiles-setup-dev.service": STAGE_WEIGHT,
                "systemd-networkd.service": STAGE_WEIGHT}
for _unit, _weight in BOOT_WEIGHTS.items():
    FILES[f"etc/systemd/system/{_unit}.d/limapy-startup-weight.conf"] = (
        0o644, f"[Service]\nStartupCPUWeight={_weight}\n")
for _unit, _args in CLOUD_INIT_STAGES.items():
    FILES[f"etc/systemd/system/{_unit}.d/limapy-preload.conf"] = (0o644, f"""\
# limapy: run this stage in the preloaded cloud-init (/{PRELOAD_DIR}/cloud-init-preload).
[Service]
ExecStart=
ExecStart=/{PRELOAD_DIR}/cloud-init-stage {_args}
StartupCPUWeight={STAGE_WEIGHT}
""")
# "Online" for cloud-init's network stage, and so for the rest of the boot, means an IPv4
# default route. systemd-networkd-wait-online, even with --ipv4, waits until networkd calls
# every link configured, and with IPv6 router discovery on (networkd's default) that is
# only once a router advertisement came: networkd sends its first solicitation about
# 1.3 s after the link is up, and QEMU's user network answers at once. The guest keeps its
# SLAAC address and IPv6 route; the boot no longer waits for them. The LIMAPY_* variables
# are for the tests.
IPV4_ONLINE = """#!/bin/bash
# limapy build:debian-12: systemd-networkd-wait-online's stand-in: online once the kernel
# has an IPv4 default route (looked at every 0.05 s, for up to 120 s as wait-online).
# Between two looks it waits in bash's `read -t` on a pipe nobody writes to (fd 3): a
# `sleep` there, a fork and exec twenty times a second, cost the guest 50-70 ms of CPU
# each under TCG while the boot waited. Without that pipe it sleeps as before.
route="${LIMAPY_PROC_NET_ROUTE:-/proc/net/route}"
limit=$(( ${LIMAPY_ONLINE_TIMEOUT:-120} * 20 ))
ticks=0
{ exec 3<> <(:); } 2>/dev/null || exec 3</dev/null
while :; do
	while read -r _iface dest _rest; do
		[ "$dest" = 00000000 ] && exit 0
	done <"$route"
	if [ "$ticks" -ge "$limit" ]; then
		echo "ipv4-online: no IPv4 default route after $((limit / 20)) s" >&2
		exit 1
	fi
	# Status above 128: the time ran out, as wanted; else (the pipe ended) sleep.
	read -r -t 0.05 -u 3 _ 2>/dev/null
	[ $? -gt 128 ] || sleep 0.05
	ticks=$((ticks + 1))
done
"""
FILES["usr/lib/limapy/ipv4-online"] = (0o755, IPV4_ONLINE)
FILES["etc/systemd/system/systemd-networkd-wait-online.service.d/limapy-ipv4.conf"] = (
    0o644, "[Service]\nExecStart=\nExecStart=/usr/lib/limapy/ipv4-online\n",
)

# Removed to shrink the image (copyright files stay).
SHRINK = ("usr/share/man", "usr/share/locale", "var/lib/apt/lists", "tmp")


def configured_mirror() -> str:
    """$LIMA_DEBIAN_MIRROR, else the Debian mirror apt on this machine uses for bookworm."""
    env = os.environ.get("LIMA_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        found = _mirror_from_deb822(_read(f))
        if found:
            return found
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for f in lists:
        for line in _read(f).splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == SUITE:
                return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def _mirror_from_deb822(text: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        suites = fields.get("suites", "").split()
        if "deb" in fields.get("types", "").split() and SUITE in suites:
            if fields.get("enabled", "yes").lower() == "no":
                continue
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0].rstrip("/")
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class DebianRecipe:
    name: str = "debian-12"
    tools: tuple[tuple[str, str], ...] = (
        ("debootstrap", "debootstrap"),
        ("chroot", "coreutils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("mount", "mount"),
        ("qemu-img", "qemu-utils"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    )
    needs_root: bool = True

    def inputs(self) -> Mapping[str, object]:
        kpkg, kver = build.kernel_package(KERNEL_META_PACKAGE)
        return {
            "recipe": RECIPE_VERSION,
            "suite": SUITE,
            "mirror": configured_mirror(),
            "packages": list(PACKAGES),
            "kernel": {kpkg: kver},
            "files": FILES,
            "assets": {name: _asset(name).decode() for name in PRELOAD_ASSETS},
            "masked": list(MASKED_UNITS),
            "generators": list(MASKED_GENERATORS),
            "udev_rules": list(MASKED_UDEV_RULES),
            "initramfs": {
                "busybox": build.apt_candidates((BUSYBOX_PACKAGE,)),
                "modules": list(INITRAMFS_MODULES),
                "init": _asset(INITRAMFS_INIT).decode(),
            },
            "cmdline": CMDLINE,
        }

    def build(self, ctx: build.BuildContext) -> None:
        work = ctx.workdir
        rootfs = work / "rootfs"
        kpkg, kver = build.kernel_package(KERNEL_META_PACKAGE)
        with ctx.step("apt-get download kernel and busybox"):
            debs = build.fetch_debs(
                ctx, {kpkg: kver, **build.apt_candidates((BUSYBOX_PACKAGE,))}
            )
            kernel_deb = debs[kpkg]
        cache = build.debs_dir() / "debootstrap"
        cache.mkdir(parents=True, exist_ok=True)
        mirror = configured_mirror()
        with ctx.step(f"debootstrap {SUITE} from {mirror}"):
            ctx.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--cache-dir={cache}",
                    "--include=" + ",".join(PACKAGES),
                    SUITE,
                    rootfs,
                    mirror,
                ],
                env={"LC_ALL": "C.UTF-8"},
                timeout=1800,
            )
        with ctx.step("configure"):
            _configure(ctx, rootfs)
        with ctx.step("kernel and initramfs"):
            shutil.copyfile(kernel_deb, rootfs / "tmp/kernel.deb")
            _chroot(ctx, rootfs, "dpkg", "-i", "/tmp/kernel.deb")
            release = build.kernel_release(kpkg)
            _write_kernel(ctx, rootfs / f"boot/vmlinuz-{release}", work / build.KERNEL)
            _write_static_nodes(ctx, rootfs, release)
        with ctx.step("initramfs (busybox, a copy of cloud-init's import)"):
            _write_initramfs(ctx, debs[BUSYBOX_PACKAGE], rootfs / "lib/modules" / release,
                             rootfs)
        with ctx.step("shrink"):
            _chroot(ctx, rootfs, "apt-get", "clean")
            _shrink(rootfs)
        mark_updated(rootfs)
        raw = work / "image.raw"
        with ctx.step(f"mkfs.ext4 {ROOT_SIZE}"):
            ctx.run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-d", rootfs, raw, ROOT_SIZE])
            build.remove_tree(rootfs)
        with ctx.step("qemu-img convert (compressed qcow2, zstd)"):
            # -m 2 -W: both cores compress. zstd, not qcow2's default zlib: QEMU inflates a
            # whole compressed cluster for every read that reaches the base image, and a
            # boot reads hundreds of MiB from it, scattered. Same image, `limactl start`
            # to Running, 3 runs interleaved (2026-12-01): zlib 29.5-36.4 s, zstd
            # 22.9-33.2 s, uncompressed 25.0-28.0 s; zstd's file is the smallest (198 MiB
            # against zlib's 204 and 656 uncompressed).
            ctx.run(["qemu-img", "convert", "-m", "2", "-W", "-c", "-o", "compression_type=zstd",
                     "-O", "qcow2", raw, work / build.IMAGE])  # fmt: skip
            raw.unlink()
        (work / build.CMDLINE).write_text(CMDLINE + "\n")


def mark_updated(rootfs: Path) -> None:
    """/etc and /var up to date with /usr, as systemd-update-done would write it (Debian 12
    ships no such unit): `ConditionNeedsUpdate=` is then false, and systemd-sysusers, which
    ran on every boot for users dpkg had made at install (2.2-3.4 s under TCG, at the head
    of the boot's critical chain, before udev and the network), no longer does. A /usr
    changed later (its mtime newer) makes the condition true again."""
    usr = (rootfs / "usr").stat().st_mtime_ns
    for d in ("etc", "var"):
        stamp = rootfs / d / ".updated"
        stamp.write_text("# /usr as of the image build (limapy build:debian-12)\n"
                         f"TIMESTAMP_NSEC={usr}\n")
        os.utime(stamp, ns=(usr, usr))


def _write_kernel(ctx: build.BuildContext, bzimage: Path, dest: Path) -> None:
    """The kernel as an ELF QEMU boots through PVH (see pvh.py), else the bzImage."""
    data = bzimage.read_bytes()
    elf = pvh.unpacked_pvh_kernel(data)
    dest.write_bytes(elf if elf is not None else data)
    ctx.log.write(f"kernel: {'vmlinux (PVH)' if elf is not None else 'bzImage'}\n")


def _write_initramfs(ctx: build.BuildContext, busybox_deb: Path, moddir: Path,
                     rootfs: Path) -> None:
    tree = ctx.workdir / "busybox"
    ctx.run(["dpkg-deb", "-x", busybox_deb, tree])
    archive = Initramfs()
    for d in ("proc", "sys", "dev", "root", "lib/modules"):
        archive.dir(d)
    archive.node("dev/console", 0o600, 5, 1)
    archive.node("dev/null", 0o666, 1, 3)
    archive.file("bin/busybox", (tree / "bin/busybox").read_bytes(), 0o755)
    archive.file("init", _asset(INITRAMFS_INIT), 0o755)
    add_modules(archive, moddir, INITRAMFS_MODULES, "build:debian-12")
    data = archive.to_cpio()
    (ctx.workdir / build.INITRD).write_bytes(data)
    ctx.log.write(f"initramfs: {len(archive.entries)} entries, {len(data)} bytes\n")
    # The early pause's initrd: the same and the copy, which only such a boot uses (every
    # other boot, and libvirt's or a plain qemu's, unpacks 6 MB, not 40).
    listed = (rootfs / PRELOAD_DIR / PY_FILES).read_text().split()
    wanted = [*listed, *(f"/{PRELOAD_DIR}/{n}" for n in ("cloud-init-preload", REGEX_TABLE))]
    copied = add_copy(archive, rootfs, PY_COPY, wanted)
    manifest = "".join(f"{size} {mtime} {path}\n" for path, (size, mtime) in copied.items())
    archive.file(f"{PY_COPY}/{PY_MANIFEST}", manifest.encode(), 0o644)
    (rootfs / PRELOAD_DIR / PY_FILES).unlink()
    ctx.log.write(f"initramfs: {len(copied)} files of cloud-init's import under /{PY_COPY}, "
                  f"{sum(size for size, _ in copied.values())} bytes\n")
    data = archive.to_cpio()
    (ctx.workdir / build.INITRD_EARLY).write_bytes(data)
    ctx.log.write(f"{build.INITRD_EARLY}: {len(archive.entries)} entries, {len(data)} bytes\n")
    shutil.rmtree(tree)


def add_copy(archive: Initramfs, rootfs: Path, under: str,
             paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Copy `paths` (absolute, as the image names them) from `rootfs` into `archive` under
    `under`, each symlink on the way as a symlink, mtimes kept (an imported module's
    compiled file holds its source's), with the names the dynamic loader looks for (each
    shared library's symlinks beside it, /lib64's interpreter); the regular files copied,
    by their path in the image, with their size and mtime."""
    copied: dict[str, tuple[int, int]] = {}
    pending = list(paths)
    for lib in [p for p in paths if ".so" in os.path.basename(p)]:
        real = rootfs / lib.lstrip("/")
        for sibling in real.parent.iterdir():
            if sibling.is_symlink() and sibling.resolve() == real.resolve():
                pending.append("/" + str(sibling.relative_to(rootfs)))
    pending.append("/lib64/ld-linux-x86-64.so.2")
    seen: set[str] = set()
    while pending:
        path = os.path.normpath(pending.pop())
        if path in seen:
            continue
        seen.add(path)
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            src = rootfs / rel
            if src.is_symlink():
                target = os.readlink(src)
                archive.symlink(f"{under}/{rel}", target)
                base = "/" if target.startswith("/") else "/" + "/".join(parts[:i - 1])
                pending.append(os.path.join(base, target, *parts[i:]))
                break
            if i == len(parts) and src.is_file():
                st = src.stat()
                archive.file(f"{under}/{rel}", src.read_bytes(), stat.S_IMODE(st.st_mode),
                             mtime=int(st.st_mtime))
                copied["/" + rel] = (st.st_size, int(st.st_mtime))
    return copied


def _write_static_nodes(ctx: build.BuildContext, rootfs: Path, release: str) -> None:
    """kmod-static-nodes' file for the image's kernel (STATIC_NODES), by the image's own
    kmod. kmod reads the modules of the kernel uname(2) names, in a chroot the build host's:
    that name points at the image's modules while it runs."""
    host = os.uname().release
    alias = rootfs / "lib/modules" / host
    made = host != release and not alias.exists()
    if made:
        alias.symlink_to(release)
    try:
        _chroot(ctx, rootfs, "kmod", "static-nodes", "--format=tmpfiles",
                f"--output=/{STATIC_NODES}")
    finally:
        if made:
            alias.unlink()


def _chroot(ctx: build.BuildContext, rootfs: Path, *argv: str) -> None:
    # A clean environment: the host's locale or PATH must not leak into maintainer scripts.
    ctx.run(
        [
            "chroot", str(rootfs), "/usr/bin/env", "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive",
            "LC_ALL=C.UTF-8", *argv,
        ]
    )  # fmt: skip


def _configure(ctx: build.BuildContext, rootfs: Path) -> None:
    for rel, (mode, text) in FILES.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    for name in PRELOAD_ASSETS:
        path = rootfs / PRELOAD_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_asset(name))
        path.chmod(0o755)
    # The compiled form of the regular expressions importing cloud-init compiles, by the
    # image's own Python (the preload uses it only when that Python is the same).
    _chroot(ctx, rootfs, "/usr/bin/python3", f"/{PRELOAD_DIR}/cloud-init-preload",
            "--regex-table", f"/{PRELOAD_DIR}/{REGEX_TABLE}")
    # What that import reads, for the initramfs's copy (its shared libraries from
    # /proc/self/maps).
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    ctx.run(["mount", "-t", "proc", "proc", proc])
    try:
        _chroot(ctx, rootfs, "/usr/bin/python3", f"/{PRELOAD_DIR}/cloud-init-preload",
                "--file-list", f"/{PRELOAD_DIR}/{PY_FILES}")
    finally:
        ctx.run(["umount", proc])
    # Every instance gets its own machine-id (systemd) and host keys (cloud-init).
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # cloud-init renders network-config for systemd-networkd (no ifupdown, no netplan).
    _chroot(ctx, rootfs, "systemctl", "enable", "systemd-networkd.service")
    _chroot(ctx, rootfs, "systemctl", "mask", *MASKED_UNITS)
    _drop_dynamic_motd(rootfs / "etc/pam.d/sshd")
    rules = rootfs / "etc/udev/rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    for name in MASKED_UDEV_RULES:
        if (rootfs / "usr/lib/udev/rules.d" / name).exists():
            (rules / name).symlink_to("/dev/null")
    generators = rootfs / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in MASKED_GENERATORS:
        (generators / name).symlink_to("/dev/null")


def _drop_dynamic_motd(pam_sshd: Path) -> None:
    """Every ssh login ran /etc/update-motd.d (pam_motd with motd=/run/motd.dynamic): about
    0.3 s of guest CPU per login under TCG, on the way to each command the host agent runs
    (resume included). /etc/motd is still shown (the `noupdate` line stays)."""
    if not pam_sshd.is_file():
        return
    lines = pam_sshd.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not ("pam_motd.so" in ln and "motd=/run/motd.dynamic" in ln)]
    pam_sshd.write_text("".join(kept))


def _asset(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def _shrink(rootfs: Path) -> None:
    for rel in SHRINK:
        d = rootfs / rel
        if d.is_dir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    docs = rootfs / "usr/share/doc"
    if docs.is_dir():
        for f in docs.rglob("*"):
            if f.is_file() and f.name != "copyright":
                f.unlink()
    for log in (rootfs / "var/log").rglob("*"):
        if log.is_file():
            log.unlink()
