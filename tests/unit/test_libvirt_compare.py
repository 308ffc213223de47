"""benchmarks/libvirt_compare.py without running anything: its arguments, which packages it
would install, the seed it builds, the virt-install command, ssh.config parsing, the report."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from benchmarks import libvirt_compare as lc
from benchmarks import libvirt_host as host

pytestmark = pytest.mark.unit


def _guest(tmp_path: Path) -> host.Guest:
    return host.Guest(
        image=tmp_path / "image.qcow2", kernel=tmp_path / "kernel", initrd=tmp_path / "initrd",
        cmdline="root=LABEL=lima-root ro console=ttyS0 net.ifnames=0",
        user_data="#cloud-config\nusers:\n- name: alice\n",
        network_config="version: 2\nethernets: {}\n", hostname="lima-default")


def test_runs_default_to_three_and_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert lc.parse_args([]).runs == 3
    assert lc.parse_args(["--runs", "1"]).runs == 1
    with pytest.raises(SystemExit):
        lc.parse_args(["--runs", "0"])
    assert "--runs must be at least 1" in capsys.readouterr().err


def test_a_profile_is_saved_only_when_asked(tmp_path: Path) -> None:
    assert lc.parse_args([]).profile is None
    assert lc.parse_args(["--profile", str(tmp_path)]).profile == tmp_path
    lc.save_profile(None, (22, "u", "k"), "x.txt")
    lc.save_profile(tmp_path, None, "x.txt")  # no ssh.config yet: nothing to reach
    assert list(tmp_path.iterdir()) == []


def test_only_the_packages_of_missing_programs_are_installed() -> None:
    assert host.missing_packages(lambda prog: f"/usr/bin/{prog}") == []
    assert host.missing_packages(lambda prog: None) == sorted(
        ["libvirt-clients", "virtinst", "libvirt-daemon-system", "qemu-system-x86"])
    only_virsh_missing = host.missing_packages(lambda p: None if p == "virsh" else p)
    assert only_virsh_missing == ["libvirt-clients"]


def test_the_seed_holds_the_three_nocloud_files(tmp_path: Path) -> None:
    iso_path = host.build_seed(tmp_path / "seed.iso", _guest(tmp_path), iid="dom-1")
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        texts = {}
        for name in ("user-data", "meta-data", "network-config"):
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            texts[name] = buf.getvalue().decode()
    finally:
        iso.close()
    assert texts["user-data"].startswith("#cloud-config\nusers:\n- name: alice")
    assert texts["meta-data"] == "instance-id: dom-1\nlocal-hostname: lima-default\n"
    assert texts["network-config"] == "version: 2\nethernets: {}\n"


def test_virt_install_boots_tcg_direct_kernel_with_a_loopback_only_network(
        tmp_path: Path) -> None:
    argv = host.virt_install_argv("libvirt-compare-1-1", _guest(tmp_path),
                                tmp_path / "o.qcow2", tmp_path / "seed.iso", 40123)
    joined = " ".join(argv)
    assert argv[0] == "virt-install" and "--import" in argv
    assert argv[argv.index("--virt-type") + 1] == "qemu"
    assert argv[argv.index("--vcpus") + 1] == "2" and argv[argv.index("--memory") + 1] == "2048"
    assert f'kernel_args="{_guest(tmp_path).cmdline}"' in joined
    assert f"path={tmp_path}/seed.iso,device=cdrom,bus=scsi" in joined
    assert "type=scsi,model=virtio-scsi" in argv
    assert argv[argv.index("--network") + 1] == "none"
    # `=`: virt-install's parser would take a separate "-netdev ..." for an option.
    netdevs = [a.split("=", 1)[1] for a in argv if a.startswith("--qemu-commandline=")]
    assert netdevs[0] == ("-netdev user,id=net0,net=192.168.5.0/24,dhcpstart=192.168.5.15,"
                          "restrict=on,hostfwd=tcp:127.0.0.1:40123-:22")
    assert netdevs[1].startswith("-device virtio-net-pci,netdev=net0")
    assert argv[argv.index("--cpu") + 1] == "mode=maximum"  # limapy's -cpu max under TCG


def test_ssh_config_gives_port_user_and_first_key() -> None:
    text = ('Host lima-default\n  IdentityFile="/h/_config/user"\n  IdentityFile="/x/id"\n'
            "  User=alice\n  Hostname=127.0.0.1\n  Port=41000\n")
    assert lc.parse_ssh_config(text) == (41000, "alice", "/h/_config/user")
    assert lc.parse_ssh_config("Host x\n  User alice\n  Port 22\n") is None


def test_report_gives_medians_and_ratios() -> None:
    def run(side: str, login: float, stop: float) -> lc.Run:
        r = lc.Run(side, stop=stop)
        r.cold.login = login
        return r

    text = lc.report([run("limapy", 30, 2), run("libvirt", 20, 4), run("limapy", 40, 4),
                      run("libvirt", 40, 4), run("limapy", 90, 9)])
    assert "cold login   40.0s" in text.splitlines()[0]
    assert "cold login   30.0s" in text.splitlines()[1]
    assert "cold login 1.33x" in text and "stop 1.00x" in text
    assert "warm done" not in text.splitlines()[2]


def test_the_docstring_names_every_program_the_script_starts() -> None:
    doc = lc.__doc__ or ""
    assert [p for p in host.PROGRAMS if p not in doc] == []
    with pytest.raises(AssertionError):
        host.sh(["rm", "-rf", "/nonexistent"])
