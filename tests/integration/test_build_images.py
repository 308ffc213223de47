"""The image builders (build:tiny, build:debian-12) and a boot of what they produce (the
Debian image's boot is checked through limactl, in test_boot_template).

The builds are cached in the user's real cache directory (XDG_CACHE_HOME is left alone on
purpose) so only the first run on a machine pays for them. debian-12 needs root.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lima.drivers.images import build, build_tiny
from lima.drivers.images.build import BuiltImage, build_image
from lima.errors import PermanentError
from tests.integration.guestkit import IID, boot, wait_banner

# The Debian image is built here (and its cache shared with every Debian test): with them.
pytestmark = pytest.mark.debian
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root")


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


def cpio_names(data: bytes) -> dict[str, int]:
    """name -> mode of every member of a newc cpio archive."""
    names: dict[str, int] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad cpio magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return names
        names[name] = mode


@pytest.fixture(scope="module")
def tiny() -> BuiltImage:
    return build_image("tiny", progress=False)


@pytest.fixture(scope="module")
def debian() -> BuiltImage:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    return build_image("debian-12", progress=False)


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(PermanentError) as err:
        build_image("nope")
    assert "build:debian-12" in str(err.value)
    assert "build:tiny" in str(err.value)


def test_tiny_product(tiny: BuiltImage) -> None:
    entry = tiny.image.parent
    assert (entry / "done").exists()
    assert (entry / "build.log").stat().st_size > 0
    info = qemu_img_info(tiny.image)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 << 20
    assert tiny.kernel is not None and tiny.kernel.stat().st_size > 1 << 20
    assert tiny.initrd is not None
    assert tiny.cmdline is not None and "console=ttyS0" in tiny.cmdline
    members = cpio_names(gzip.decompress(tiny.initrd.read_bytes()))
    for name in ("init", "bin/busybox", "usr/sbin/dropbear", "usr/bin/dropbearkey",
                 "bin/bash", "usr/bin/sudo", "lib/modules/load-order", "dev/console",
                 "lib64/ld-linux-x86-64.so.2", "etc/acpi/PWRF/00000080"):
        assert name in members, name
    assert members["bin/busybox"] & 0o4000, "busybox must be setuid for the sudo wrapper"
    assert any(n.endswith("/virtio_net.ko") for n in members)
    assert any(n.endswith("/isofs.ko") for n in members)


def test_second_call_hits_the_cache(tiny: BuiltImage) -> None:
    stamp = (tiny.image.parent / "done").stat().st_mtime_ns
    again = build_image("tiny", progress=False)
    assert again == tiny
    assert (again.image.parent / "done").stat().st_mtime_ns == stamp
    assert build.cached_image("tiny") == tiny


def test_tiny_boots_to_ssh_and_runs_boot_sh(tiny: BuiltImage, tmp_path: Path) -> None:
    guest = boot(tiny, tmp_path)
    try:
        wait_banner(guest.port, time.monotonic() + 90)
        assert guest.wait_file("/run/lima-boot-done", time.monotonic() + 60) == IID
        res = guest.ssh("id -un; id -u; hostname; sudo id -u; echo $HOME; bash -c 'echo ok'")
        assert res.returncode == 0, res.stderr + guest.serial_tail()
        assert res.stdout.split() == ["tester", "1234", "lima-buildtest", "0",
                                      "/home/tester.linux", "ok"]
        assert guest.ssh("stat -c %a ~/.ssh/authorized_keys").stdout.strip() == "600"
        # sbin applets are on the PATH of a non-login ssh command too.
        assert guest.ssh("command -v ip poweroff").returncode == 0
    finally:
        guest.stop()


@needs_root
def test_debian_product(debian: BuiltImage, tmp_path: Path) -> None:
    info = qemu_img_info(debian.image)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 4 << 30
    # Compressed with zstd: a boot reads the base image's clusters faster than with zlib.
    specific = info["format-specific"]
    assert isinstance(specific, dict)
    assert specific["data"]["compression-type"] == "zstd"
    assert debian.kernel is not None and debian.initrd is not None
    assert debian.cmdline is not None and "root=LABEL=lima-root" in debian.cmdline
    # Look inside without mounting: back to raw, then debugfs reads the ext4.
    raw = tmp_path / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(debian.image), str(raw)],
                   check=True)
    def cat(path: str) -> str:
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)],
                              capture_output=True, text=True, check=True).stdout
    cfg = cat("/etc/cloud/cloud.cfg.d/90-lima.cfg")
    assert "datasource_list: [NoCloud, None]" in cfg
    assert "locale:" not in cfg  # not in cloud-init's schema as false; not run anyway
    assert cat("/etc/machine-id") == ""
    # / is never fsck'd at boot (pass 0); the initramfs mounts it as fstab says.
    assert cat("/etc/fstab").split("\n")[0].split() == [
        "LABEL=lima-root", "/", "ext4", "defaults,errors=remount-ro", "0", "0"]
    assert cat("/etc/sysctl.d/60-lima-eth0.conf") == "net.ipv6.conf.eth0.accept_dad = 0\n"
    listing = subprocess.run(["debugfs", "-R", "ls -l /usr/bin", str(raw)],
                             capture_output=True, text=True, check=True).stdout
    for tool in ("cloud-init", "sshfs", "sudo", "python3"):
        assert f" {tool}\n" in listing or f" {tool} " in listing, tool
    # udev rules for hardware the guest never has are masked (a link to /dev/null).
    rule = "/etc/udev/rules.d/78-sound-card.rules"
    masked = subprocess.run(["debugfs", "-R", f"stat {rule}", str(raw)],
                            capture_output=True, text=True, check=True).stdout
    assert "Type: symlink" in masked and '"/dev/null"' in masked, masked


USER_DATA_SAMPLES = {
    # PyYAML's block style, as lima.drivers.cloudconfig writes it.
    "pyyaml": """#cloud-config
growpart:
  mode: auto
users:
- name: alice
  uid: 1001
  gecos: Alice A
  homedir: /home/alice.linux
  shell: /bin/bash
  sudo: ALL=(ALL) NOPASSWD:ALL
  ssh_authorized_keys:
  - ssh-ed25519 AAAA alice@host
  - 'ssh-rsa BBBB two'
ssh_pwauth: false
bootcmd:
- |
  echo users:
  - not: a user
""",
    # Indented items, quoted scalars, the dashed key name and a flow list.
    "indented": """#cloud-config
users:
  - name: "alice"
    uid: "1001"
    homedir: "/home/alice.linux"
    ssh-authorized-keys:
      - "ssh-ed25519 AAAA alice@host"
      - "ssh-rsa BBBB two"
  - name: bob
    ssh_authorized_keys: [ssh-ed25519 CCCC bob]
""",
}


@pytest.mark.parametrize("sample", sorted(USER_DATA_SAMPLES))
def test_tiny_init_parses_user_data(sample: str, tmp_path: Path) -> None:
    """The awk parser in the tiny /init, run by the host's busybox."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("no busybox on this machine")
    script = build_tiny.init_script().decode()
    start = script.index("users_from_userdata() {")
    func = script[start : script.index("\n}\n", start) + 3]
    ud = tmp_path / "user-data"
    ud.write_text(USER_DATA_SAMPLES[sample])
    out = subprocess.run(
        [busybox, "sh", "-c", f'{func}\nusers_from_userdata "$1"', "sh", str(ud)],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    alice = ["U", "alice", "1001", "/home/alice.linux", "/bin/bash" if sample == "pyyaml" else "-"]
    assert rows[0] == alice
    assert rows[1:3] == [["K", "ssh-ed25519 AAAA alice@host"], ["K", "ssh-rsa BBBB two"]]
    if sample == "indented":
        assert rows[3:] == [["U", "bob", "-", "-", "-"], ["K", "ssh-ed25519 CCCC bob"]]
    else:
        assert len(rows) == 3


def test_concurrent_builds_make_one(tiny: BuiltImage, tmp_path: Path) -> None:
    """Two processes building build:tiny into an empty cache: one builds, one waits."""
    cache = tmp_path / "cache"
    # The .debs are shared (hard links) so this needs no mirror and stays fast.
    shutil.copytree(build.debs_dir(), cache / "lima/build/debs", copy_function=os.link)
    code = "from lima.drivers.images.build import build_image; print(build_image('tiny').image)"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    entries = [p.name for p in (cache / "lima/build").iterdir() if p.is_dir()]
    assert sorted(entries) == sorted(["debs", Path(outs[0][0].strip()).parent.name])
    assert sum("apt-get download" in err for _, err in outs) == 1, outs


def test_tiny_powers_off_on_the_acpi_button(tiny: BuiltImage, tmp_path: Path) -> None:
    guest = boot(tiny, tmp_path)
    try:
        wait_banner(guest.port, time.monotonic() + 90)
        guest.powerdown(timeout=60)
        assert guest.proc.returncode == 0
    finally:
        guest.stop()
