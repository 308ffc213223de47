"""Pure parts of the image builders: cache keys, .deb names, mirror discovery, cpio."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from lima.drivers import cloudconfig
from lima.drivers.images import build, build_debian, build_tiny
from lima.errors import PermanentError


def test_cache_key_is_stable_and_input_sensitive() -> None:
    a = build.cache_key({"recipe": "x-1", "packages": {"a": "1"}})
    assert a == build.cache_key({"packages": {"a": "1"}, "recipe": "x-1"})
    assert a != build.cache_key({"recipe": "x-1", "packages": {"a": "2"}})
    assert len(a) == 16


def test_deb_file_name_quotes_the_epoch() -> None:
    assert (
        build.deb_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1")
        == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
    )


def test_kernel_release() -> None:
    assert build.kernel_release("linux-image-6.1.0-56-cloud-amd64") == "6.1.0-56-cloud-amd64"


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(PermanentError, match=r"build:debian-12, build:tiny"):
        build._recipe("windows")


def test_mirror_from_deb822_skips_security_and_disabled() -> None:
    text = """Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""
    assert build_debian._mirror_from_deb822(text) == "http://mirror.example/debian"


def test_mirror_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_DEBIAN_MIRROR", "http://local.example/debian/")
    assert build_debian.configured_mirror() == "http://local.example/debian"


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes, int, int]]:
    out: dict[str, tuple[int, bytes, int, int]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110 : pos + 110 + f[11] - 1].decode()
        pos += 110 + f[11]
        pos += -pos % 4
        body = data[pos : pos + f[6]]
        pos += f[6] + (-f[6] % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (f[1], body, f[9], f[10])
        MTIMES[name] = f[5]


MTIMES: dict[str, int] = {}  # the last parse's mtimes


def test_initramfs_cpio_round_trip() -> None:
    fs = build_tiny.Initramfs()
    fs.file("usr/bin/tool", b"abc", 0o4755)
    fs.symlink("bin/sh", "/bin/busybox")
    fs.node("dev/console", 0o600, 5, 1)
    fs.dir("tmp", 0o1777)
    got = _parse_newc(fs.to_cpio())
    assert list(got) == sorted(got), "directories must precede their contents"
    assert {"usr", "usr/bin", "bin", "dev"} <= set(got)
    mode, body, _, _ = got["usr/bin/tool"]
    assert stat.S_ISREG(mode) and mode & 0o7777 == 0o4755 and body == b"abc"
    mode, body, _, _ = got["bin/sh"]
    assert stat.S_ISLNK(mode) and body == b"/bin/busybox"
    mode, _, major, minor = got["dev/console"]
    assert stat.S_ISCHR(mode) and (major, minor) == (5, 1)
    assert got["tmp"][0] & 0o7777 == 0o1777


def test_tiny_init_asset_ships_with_the_package() -> None:
    text = build_tiny.init_script().decode()
    assert text.startswith("#!/bin/busybox sh")
    assert "exec /sbin/init" in text


def test_debian_cmdline_matches_the_fstab_label() -> None:
    label = build_debian.ROOT_LABEL
    assert f"root=LABEL={label}" in build_debian.CMDLINE
    assert build_debian.FILES["etc/fstab"][1].startswith(f"LABEL={label}\t/\t")


def test_debian_root_is_mounted_read_write_once_with_the_fstab_options() -> None:
    # The initramfs mounts / read-write with fstab's options, so systemd-remount-fs has
    # nothing to do (masked), and pass 0 keeps systemd-fsck-root out of the boot.
    label, fs, _type, options, _dump, passno = build_debian.FILES["etc/fstab"][1].split()
    assert (label, fs, passno) == (f"LABEL={build_debian.ROOT_LABEL}", "/", "0")
    words = build_debian.CMDLINE.split()
    assert "rw" in words and "ro" not in words
    flags = next(w.removeprefix("rootflags=") for w in words if w.startswith("rootflags="))
    assert set(flags.split(",")) == set(options.split(",")) - {"defaults"}
    assert "systemd-remount-fs.service" in build_debian.MASKED_UNITS
    init = build_debian._asset(build_debian.INITRAMFS_INIT).decode()
    assert "rw) mode=rw" in init and "rootflags=*)" in init


def test_debian_eth0_skips_ipv6_duplicate_address_detection() -> None:
    # Only eth0, QEMU's user network (net.ifnames=0 keeps the name): other NICs keep it.
    sysctl = build_debian.FILES["etc/sysctl.d/60-lima-eth0.conf"][1]
    assert "net.ifnames=0" in build_debian.CMDLINE.split()
    assert sysctl.splitlines() == ["net.ipv6.conf.eth0.accept_dad = 0"]


def test_debian_sshd_starts_without_a_separate_configuration_test() -> None:
    dropin = build_debian.FILES["etc/systemd/system/ssh.service.d/limapy-no-config-test.conf"]
    assert dropin == (0o644, "[Service]\nExecStartPre=\n")


def test_debian_sshd_forks_for_each_connection_without_executing_itself_again() -> None:
    mode, dropin = build_debian.FILES["etc/systemd/system/ssh.service.d/limapy-no-rexec.conf"]
    lines = dropin.splitlines()
    # The unit's ExecStart is reset, then Debian's own line with -r (SSHD_OPTS still read).
    assert mode == 0o644 and lines[:2] == ["[Service]", "ExecStart="]
    assert lines[2].split() == ["ExecStart=/usr/sbin/sshd", "-D", "-r", "$SSHD_OPTS"]


def test_debian_root_grows_with_the_disk() -> None:
    # `disk:` growth reaches / through cloud-init's resizefs at each boot (resize2fs on
    # the whole disk: the image has no partition table, so no growpart is needed).
    # tests/integration/test_debian_shared.py shows it on a real guest.
    cfg = yaml.safe_load(build_debian.CLOUD_CFG)
    assert cfg.get("resize_rootfs", True) is True
    assert "resizefs" in cfg.get("cloud_init_modules", ["resizefs"])
    assert "root=/dev/vda1" not in build_debian.CMDLINE  # the file system is vda itself


class _FakeRecipe:
    name = "fake"
    tools: tuple[tuple[str, str], ...] = (("sh", "dash"),)
    needs_root = True

    def inputs(self) -> dict[str, object]:
        return {}

    def build(self, ctx: build.BuildContext) -> None:
        raise AssertionError("not called")


def test_missing_tools_name_their_debian_packages() -> None:
    recipe = _FakeRecipe()
    recipe.tools = (("sh", "dash"), ("no-such-tool-xyz", "xyz-utils"), ("no-such-2", "abc"))
    with pytest.raises(PermanentError) as err:
        build.check_tools(recipe)
    assert "no-such-tool-xyz, no-such-2" in str(err.value)
    assert "apt-get install abc xyz-utils" in str(err.value)


def test_building_without_root_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    with pytest.raises(PermanentError, match="needs root: run the command as root"):
        build.check_tools(_FakeRecipe())


def test_debian_cloud_init_runs_every_module_limapy_user_data_needs() -> None:
    # The image lists cloud-init's modules itself (fewer imports per stage under TCG); each
    # key cloudconfig.user_data can write must keep the module that acts on it.
    cfg = yaml.safe_load(build_debian.CLOUD_CFG)
    listed = {*cfg["cloud_init_modules"], *cfg["cloud_config_modules"],
              *cfg["cloud_final_modules"]}
    needed = {
        "bootcmd": "bootcmd", "growpart": "growpart", "resize_rootfs": "resizefs",
        "mounts": "mounts", "hostname": "set_hostname", "ca_certs": "ca-certs",
        "users": "users-groups", "ssh_genkeytypes": "ssh", "ssh_pwauth": "set-passwords",
        "timezone": "timezone", "package_upgrade": "package-update-upgrade-install",
    }
    assert {k: m for k, m in needed.items() if m not in listed} == {}
    # bootcmd (boot.sh) and users come in the init stage, before sshd accepts logins.
    assert {"bootcmd", "users-groups", "ssh"} <= set(cfg["cloud_init_modules"])


def test_debian_initramfs_and_blacklist_keep_mounts_and_disks_loadable() -> None:
    # / needs virtio_blk and ext4 in the initramfs; 9p, virtiofs, the cidata CD and
    # additionalDisks load from / later, so none of them may be blacklisted.
    assert {"virtio_pci", "virtio_blk", "ext4"} <= set(build_debian.INITRAMFS_MODULES)
    blacklist = build_debian.FILES["etc/modprobe.d/lima-blacklist.conf"][1].split()
    for module in ("9p", "9pnet_virtio", "virtiofs", "virtio_scsi", "sr_mod", "isofs",
                   "virtio_blk", "virtio_net", "virtio_console", "fuse", "ext4"):
        assert module not in blacklist
    assert "ssh.service" not in build_debian.MASKED_UNITS


def test_debian_keeps_the_generators_a_limapy_guest_uses() -> None:
    # fstab (/ and the mounts cloud-init writes), getty (serial console) and cloud-init's
    # own generator must still run; the masked ones are real systemd generators.
    masked = set(build_debian.MASKED_GENERATORS)
    assert not masked & {"systemd-fstab-generator", "systemd-getty-generator",
                         "cloud-init-generator"}
    assert all(g.startswith("systemd-") and g.endswith("-generator") for g in masked)


def test_debian_initramfs_init_reads_root_from_the_kernel_command_line() -> None:
    init = build_debian._asset(build_debian.INITRAMFS_INIT).decode()
    assert init.startswith("#!/bin/busybox sh\n")
    # The image's command line names / by label; the init resolves it and hands over.
    assert f"root=LABEL={build_debian.ROOT_LABEL}" in build_debian.CMDLINE
    assert "findfs" in init and "switch_root /root" in init
    assert "crc32c_generic" in build_debian.INITRAMFS_MODULES


def test_debian_initramfs_loads_only_device_free_modules_before_a_pause() -> None:
    # The modules that read an instance's own device (the disk's partition table, the
    # CD's capacity, the NIC's MAC, the shares' tags) load after the go line; every other
    # one of the initramfs's may load before the pause. /sys/module names have "_" where
    # a file name could have "-": the script compares file names, so none may have one.
    init = build_debian._asset(build_debian.INITRAMFS_INIT).decode()
    case = next(line for line in init.splitlines() if line.strip().startswith("case \"$1\" in")
                and ".ko" in line)
    listed = {w.removesuffix(".ko") for w in case.split(" in ", 1)[1].split(")")[0].split(" | ")}
    assert listed == {"virtio_blk", "sr_mod", "virtio_net", "9pnet_virtio"}
    assert listed <= set(build_debian.INITRAMFS_MODULES)
    assert not any("-" in m for m in build_debian.INITRAMFS_MODULES)
    # called before each of the two pauses: the early one (/ not mounted) and the late one
    assert init.count('\n\tload_free ""\n') == 1 and init.count("\n\tload_free /root\n") == 1


def test_debian_sshd_pam_keeps_the_static_motd_only(tmp_path: Path) -> None:
    pam = tmp_path / "sshd"
    pam.write_text("@include common-account\n"
                   "session    optional     pam_motd.so  motd=/run/motd.dynamic\n"
                   "session    optional     pam_motd.so noupdate\n"
                   "@include common-session\n")
    build_debian._drop_dynamic_motd(pam)
    assert pam.read_text() == ("@include common-account\n"
                               "session    optional     pam_motd.so noupdate\n"
                               "@include common-session\n")
    build_debian._drop_dynamic_motd(tmp_path / "absent")  # no file: nothing to do


def test_debian_keeps_the_udev_rules_of_the_power_button_seats_disks_and_nic() -> None:
    masked = set(build_debian.MASKED_UDEV_RULES)
    # QMP system_powerdown reaches logind through the ACPI button's input device, which
    # 60-input-id classifies and 70-power-switch tags; the rest keep /dev/disk/by-label
    # (cidata), the NIC's name and systemd's device units.
    # video.display adds a GPU, a keyboard and a pointer: their rules stay too.
    assert not masked & {"60-drm.rules", "60-evdev.rules", "70-mouse.rules",
                         "70-touchpad.rules", "60-persistent-input.rules"}
    assert not masked & {"60-input-id.rules", "70-power-switch.rules", "71-seat.rules",
                         "73-seat-late.rules", "70-uaccess.rules", "60-block.rules",
                         "60-persistent-storage.rules", "60-cdrom_id.rules",
                         "80-net-setup-link.rules", "80-drivers.rules", "99-systemd.rules",
                         "50-udev-default.rules"}
    assert all(r.endswith(".rules") for r in masked)


def test_the_initramfs_copy_of_cloud_inits_import_keeps_symlinks_mtimes_and_sonames(
        tmp_path: Path) -> None:
    """What the early pause's preload imports from: the image's paths, each symlink on the
    way a symlink (relative, absolute, a directory's), each file with its mtime (a
    compiled module holds its source's), the loader's names for each library; the
    manifest covers the regular files only."""
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib64").mkdir(parents=True)
    (root / "etc/python3.11").mkdir(parents=True)
    (root / "usr/lib/python3.11").mkdir(parents=True)
    (root / "lib64").symlink_to("usr/lib64")
    (root / "lib").symlink_to("usr/lib")
    (root / "usr/bin/python3.11").write_bytes(b"ELF")
    (root / "usr/bin/python3").symlink_to("python3.11")
    libdir = root / "usr/lib/x86_64-linux-gnu"
    (libdir / "ld-linux-x86-64.so.2").write_bytes(b"ld")
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (libdir / "libz.so.1.2.13").write_bytes(b"z" * 5)
    (libdir / "libz.so.1").symlink_to("libz.so.1.2.13")
    (libdir / "libother.so.1").write_bytes(b"o")  # not listed: not copied
    (root / "etc/python3.11/sitecustomize.py").write_text("# site\n")
    (root / "usr/lib/python3.11/sitecustomize.py").symlink_to(
        "/etc/python3.11/sitecustomize.py")
    os.utime(root / "usr/bin/python3.11", (1_700_000_000, 1_700_000_000))

    archive = build_tiny.Initramfs()
    copied = build_debian.add_copy(archive, root, "py", [
        "/usr/bin/python3", "/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/usr/lib/python3.11/sitecustomize.py"])
    got = _parse_newc(archive.to_cpio())

    def link(path: str) -> str:
        mode, body, _, _ = got[path]
        assert stat.S_ISLNK(mode), path
        return body.decode()

    assert link("py/usr/bin/python3") == "python3.11"
    assert link("py/lib") == "usr/lib" and link("py/lib64") == "usr/lib64"
    assert link("py/usr/lib/x86_64-linux-gnu/libz.so.1") == "libz.so.1.2.13"
    assert link("py/usr/lib/python3.11/sitecustomize.py") == "/etc/python3.11/sitecustomize.py"
    assert link("py/usr/lib64/ld-linux-x86-64.so.2").endswith("ld-linux-x86-64.so.2")
    assert got["py/usr/bin/python3.11"][1] == b"ELF"
    assert MTIMES["py/usr/bin/python3.11"] == 1_700_000_000
    assert got["py/etc/python3.11/sitecustomize.py"][1] == b"# site\n"
    assert "py/usr/lib/x86_64-linux-gnu/libother.so.1" not in got
    assert copied == {
        "/usr/bin/python3.11": (3, 1_700_000_000),
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13":
            (5, int((libdir / "libz.so.1.2.13").stat().st_mtime)),
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2":
            (2, int((libdir / "ld-linux-x86-64.so.2").stat().st_mtime)),
        "/etc/python3.11/sitecustomize.py":
            (7, int((root / "etc/python3.11/sitecustomize.py").stat().st_mtime)),
    }


def test_the_image_marks_etc_and_var_updated_as_of_its_usr(tmp_path: Path) -> None:
    """ConditionNeedsUpdate= compares each stamp's mtime with /usr's: equal, no update."""
    for d in ("usr", "etc", "var"):
        (tmp_path / d).mkdir()
    os.utime(tmp_path / "usr", ns=(1_700_000_000_123_456_789,) * 2)
    build_debian.mark_updated(tmp_path)
    for d in ("etc", "var"):
        stamp = tmp_path / d / ".updated"
        assert stamp.stat().st_mtime_ns == 1_700_000_000_123_456_789
        assert "TIMESTAMP_NSEC=1700000000123456789\n" in stamp.read_text()


def test_debian_login_path_outranks_the_stages_and_boot_units_at_startup() -> None:
    # PID 1 starts runnable jobs highest startup CPU weight first: sshd and
    # systemd-user-sessions must outrank cloud-init's stages and the lima-boot/lima-mounts
    # units cloud-init's bootcmd starts (lima.drivers.cloudconfig), or they wait behind
    # them when the network stage ends.
    def weight(text: str) -> int:
        found = re.findall(r"StartupCPUWeight=(\d+)", text)
        assert len(set(found)) == 1, text
        return int(found[0])

    files = build_debian.FILES
    stages = {weight(files[f"etc/systemd/system/{u}.d/limapy-preload.conf"][1])
              for u in build_debian.CLOUD_INIT_STAGES}
    hook = cloudconfig.BOOT_UNIT_WEIGHT
    assert f"-p StartupCPUWeight={hook} " in cloudconfig.boot_hook_script()
    for unit, value in build_debian.BOOT_WEIGHTS.items():
        drop_in = files[f"etc/systemd/system/{unit}.d/limapy-startup-weight.conf"][1]
        assert drop_in == f"[Service]\nStartupCPUWeight={value}\n"
    login = [build_debian.BOOT_WEIGHTS[u] for u in ("ssh.service", "systemd-user-sessions.service")]
    assert min(login) > max(*stages, hook), (login, stages, hook)
    assert "kmod-static-nodes.service" in build_debian.MASKED_UNITS
    assert build_debian.STATIC_NODES == "etc/tmpfiles.d/static-nodes.conf"
