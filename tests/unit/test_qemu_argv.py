"""The QEMU command line builder (lima.drivers.qemu): pure, no process is started."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest

from lima.drivers import qemu
from lima.drivers.qemu import HostFiles, binary_accel, qemu_argv
from lima.errors import PermanentError
from lima.paths import UNIX_PATH_MAX
from lima.schemas.macaddr import mac_address
from lima.schemas.spec import InstanceSpec, QemuOptions, SSHConfig, User

GiB = 1024**3
BIN = ["/usr/bin/qemu-system-x86_64"]
HOST = HostFiles(
    machine_id="0123456789abcdef",
    qboot=Path("/q/qboot.rom"),
    uefi_code=Path("/fw/OVMF_CODE.fd"),
)


def make_spec(**changes: object) -> InstanceSpec:
    spec = InstanceSpec(
        name="default",
        vm_type="qemu",
        os="Linux",
        arch="x86_64",
        images=(),
        cpus=2,
        memory=2 * GiB,
        disk=20 * GiB,
        mounts=(),
        mount_type="reverse-sshfs",
        ssh=SSHConfig(),
        user=User("alice", 1000, "Alice", "/home/alice.linux", "/bin/bash"),
        qemu=QemuOptions(restrict_network=True),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture
def inst(tmp_path: Path) -> Path:
    d = tmp_path / "default"
    d.mkdir()
    return d


def build(inst: Path, spec: InstanceSpec | None = None, **kw: object) -> list[str]:
    args: dict[str, object] = {"ssh_port": 60022, "accel": "tcg", "binary": BIN, "host": HOST}
    args.update(kw)
    return qemu_argv(spec or make_spec(), inst, **args)  # type: ignore[arg-type]


def values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


def one(argv: list[str], option: str) -> str:
    found = values(argv, option)
    assert len(found) == 1, f"{option}: {found}"
    return found[0]


def with_kernel(
    inst: Path, *, initrd: bool = True, cmdline: str | None = "root=LABEL=x ro"
) -> None:
    (inst / "kernel").write_bytes(b"\x00" * 16)
    if initrd:
        (inst / "initrd").write_bytes(b"\x00" * 16)
    if cmdline is not None:
        (inst / "kernel.cmdline").write_text(cmdline + "\n")


# ---- machine, accelerator, cpu, smp, memory -----------------------------------------------


def test_binary_first_then_name_machine_smp_memory(inst: Path) -> None:
    argv = build(inst)
    assert argv[0] == BIN[0]
    assert one(argv, "-name") == "lima-default"
    assert one(argv, "-machine") == "q35"
    assert one(argv, "-smp") == "2,sockets=1,cores=2,threads=1"
    assert one(argv, "-m") == "2048"
    assert "-nodefaults" in argv
    assert "-daemonize" not in argv


def test_tcg_uses_multithreaded_tcg_and_cpu_max(inst: Path) -> None:
    argv = build(inst, accel="tcg")
    accel = one(argv, "-accel")
    assert accel.startswith("tcg,") and "thread=multi" in accel
    assert re.search(r"tb-size=\d+", accel)
    assert one(argv, "-cpu") == "max,-erms,-fsrm"


def test_kvm_uses_cpu_host(inst: Path) -> None:
    argv = build(inst, accel="kvm")
    assert one(argv, "-accel") == "kvm"
    assert one(argv, "-cpu") == "host"


@pytest.mark.parametrize(
    ("cpu_type", "accel", "expected"),
    [
        ("Haswell-v4", "tcg", "Haswell-v4"),
        ("Haswell-v4", "kvm", "Haswell-v4"),
        ("host", "kvm", "host"),
        ("host", "tcg", "max,-erms,-fsrm"),  # TCG rejects "host"
        ("host,-pdpe1gb", "tcg", "max,-erms,-fsrm,-pdpe1gb"),
        ("max", "tcg", "max"),  # a model the user names is given as is
    ],
)
def test_cpu_type_overrides(inst: Path, cpu_type: str, accel: str, expected: str) -> None:
    argv = build(inst, make_spec(cpu_type=cpu_type), accel=accel)
    assert one(argv, "-cpu") == expected


def test_tcg_cpu_of_other_arches_is_max() -> None:
    # ERMS and FSRM are x86 flags: QEMU refuses them on another architecture's "max".
    assert qemu.cpu_model(make_spec(arch="aarch64"), "tcg") == "max"
    assert qemu.cpu_model(make_spec(arch="aarch64", cpu_type="host"), "tcg") == "max"


@pytest.mark.parametrize(
    ("memory", "mib"), [(GiB, "1024"), (3 * GiB // 2, "1536"), (512 * 1024**2, "512")]
)
def test_memory_in_mib(inst: Path, memory: int, mib: str) -> None:
    assert one(build(inst, make_spec(memory=memory)), "-m") == mib


def test_tb_size_scales_with_memory_within_bounds() -> None:
    assert qemu.tcg_tb_size_mib(512) == 256
    assert qemu.tcg_tb_size_mib(4096) == 1024
    assert qemu.tcg_tb_size_mib(64 * 1024) == 1024


# ---- QEMU_SYSTEM_* overrides with extra arguments -----------------------------------------


def test_override_with_accel_keeps_ours_out(inst: Path) -> None:
    binary = [BIN[0], "-accel", "tcg"]
    argv = build(inst, accel="kvm", binary=binary)
    assert argv[:3] == binary
    assert values(argv, "-accel") == ["tcg"]
    # The forced accelerator decides the cpu: "host" would not start under TCG.
    assert one(argv, "-cpu") == "max,-erms,-fsrm"


def test_override_with_machine_accel_keeps_our_machine_and_accel_out(inst: Path) -> None:
    binary = [BIN[0], "-machine", "q35,accel=tcg"]
    argv = build(inst, accel="kvm", binary=binary)
    assert values(argv, "-machine") == ["q35,accel=tcg"]
    assert "-accel" not in argv
    assert one(argv, "-cpu") == "max,-erms,-fsrm"


def test_override_with_cpu_is_not_duplicated(inst: Path) -> None:
    argv = build(inst, binary=[BIN[0], "-cpu", "qemu64"])
    assert values(argv, "-cpu") == ["qemu64"]


@pytest.mark.parametrize(
    ("binary", "expected"),
    [
        ([BIN[0]], None),
        ([BIN[0], "-accel", "tcg"], "tcg"),
        ([BIN[0], "-accel", "tcg,thread=single"], "tcg"),
        ([BIN[0], "--accel", "kvm"], "kvm"),
        ([BIN[0], "-machine", "q35,accel=kvm:tcg"], "kvm"),
        ([BIN[0], "-M", "accel=tcg"], "tcg"),
        ([BIN[0], "-enable-kvm"], "kvm"),
        ([BIN[0], "-machine", "q35"], None),
    ],
)
def test_binary_accel(binary: list[str], expected: str | None) -> None:
    assert binary_accel(binary) == expected


def test_qemu_binary_env_override_is_shell_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU_SYSTEM_X86_64", "my-qemu -accel 'tcg,thread=single'")
    monkeypatch.setattr(qemu.shutil, "which", lambda name: f"/opt/bin/{name}")
    assert qemu.qemu_binary("x86_64") == ["/opt/bin/my-qemu", "-accel", "tcg,thread=single"]


def test_qemu_binary_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("QEMU_SYSTEM_X86_64", "QEMU_SYSTEM_AARCH64", "QEMU_SYSTEM_ARM"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(qemu.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert qemu.qemu_binary("x86_64") == ["/usr/bin/qemu-system-x86_64"]
    assert qemu.qemu_binary("aarch64") == ["/usr/bin/qemu-system-aarch64"]
    assert qemu.qemu_binary("armv7l") == ["/usr/bin/qemu-system-arm"]
    monkeypatch.setenv("QEMU_SYSTEM_ARM", "qemu-arm-custom")
    assert qemu.qemu_binary("armv7l") == ["/usr/bin/qemu-arm-custom"]


def test_qemu_binary_missing_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QEMU_SYSTEM_X86_64", raising=False)
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(PermanentError, match="qemu-system-x86_64: not found"):
        qemu.qemu_binary("x86_64")
    with pytest.raises(PermanentError, match="unsupported arch"):
        qemu.qemu_binary("mips")


# ---- disks, cidata ------------------------------------------------------------------------


def test_diffdisk_is_virtio_and_cidata_is_a_scsi_cdrom(inst: Path) -> None:
    argv = build(inst)
    drives = values(argv, "-drive")
    assert f"file={inst.absolute()}/diffdisk,format=qcow2,if=virtio,discard=on" in drives
    assert f"id=cdrom0,if=none,format=raw,readonly=on,file={inst.absolute()}/cidata.iso" in drives
    devices = values(argv, "-device")
    assert "virtio-scsi-pci,id=scsi0" in devices
    assert "scsi-cd,bus=scsi0.0,drive=cdrom0" in devices


def test_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    d = tmp_path / "a,b"
    d.mkdir()
    argv = build(d)
    drive = f"file={tmp_path}/a,,b/diffdisk,format=qcow2,if=virtio,discard=on"
    assert drive in values(argv, "-drive")
    assert one(argv, "-pidfile") == f"{d}/qemu.pid"  # a plain path, not an option list


def test_iso_basedisk_boots_from_cdrom(inst: Path) -> None:
    iso = bytearray(0x9000)
    iso[0x8001:0x8006] = b"CD001"
    (inst / "basedisk").write_bytes(bytes(iso))
    argv = build(inst, make_spec(firmware_legacy_bios=True))
    assert one(argv, "-boot").startswith("order=d")
    assert any("basedisk" in d and "media=cdrom" in d for d in values(argv, "-drive"))


# ---- kernel, firmware, boot order ---------------------------------------------------------


def test_kernel_initrd_cmdline_and_qboot(inst: Path) -> None:
    with_kernel(inst, cmdline="root=LABEL=lima-root console=ttyS0\n  quiet")
    argv = build(inst, accel="kvm")
    assert one(argv, "-kernel") == f"{inst.absolute()}/kernel"
    assert one(argv, "-initrd") == f"{inst.absolute()}/initrd"
    assert one(argv, "-append") == "root=LABEL=lima-root console=ttyS0 quiet"
    assert one(argv, "-bios") == "/q/qboot.rom"
    assert "-boot" not in argv
    assert not any(d.startswith("if=pflash") for d in values(argv, "-drive"))


def test_a_boot_pauses_only_as_the_image_says_it_can(inst: Path) -> None:
    early, first = "limapy.pause.early", "limapy.pause"
    with_kernel(inst, cmdline="root=LABEL=lima-root quiet limapy.pausable")
    assert one(build(inst, accel="kvm", pause=first), "-append").split()[-1] == first
    assert first not in one(build(inst, accel="kvm"), "-append").split()
    assert first in one(build(inst, accel="tcg", pause=first), "-append").split()
    # An image that knows only the first boot's pause: no early one.
    assert early not in one(build(inst, accel="kvm", pause=early), "-append")
    with_kernel(inst, cmdline="root=x quiet limapy.pausable limapy.pausable.early")
    assert one(build(inst, accel="kvm", pause=early), "-append").split()[-1] == early
    assert first not in one(build(inst, accel="kvm", pause=early), "-append").split()
    with_kernel(inst, cmdline="root=LABEL=lima-root quiet")
    for word in (first, early):
        assert word not in one(build(inst, accel="kvm", pause=word), "-append")


def test_only_a_boot_paused_early_boots_the_early_initrd(inst: Path) -> None:
    """initrd.early (the image's initrd and its copy of cloud-init's import) is for a boot
    that pauses early; a first boot's pause, a boot without one, and an image without the
    file boot the initrd."""
    early, first = "limapy.pause.early", "limapy.pause"
    with_kernel(inst, cmdline="root=x quiet limapy.pausable limapy.pausable.early")
    assert one(build(inst, accel="kvm", pause=early), "-initrd") == f"{inst.absolute()}/initrd"
    (inst / "initrd.early").write_bytes(b"early")
    assert one(build(inst, accel="kvm", pause=early), "-initrd") == (
        f"{inst.absolute()}/initrd.early")
    for pause in (first, ""):
        assert one(build(inst, accel="kvm", pause=pause), "-initrd") == (
            f"{inst.absolute()}/initrd")
    # An image whose command line cannot pause early: no pause, the initrd.
    with_kernel(inst, cmdline="root=x quiet limapy.pausable")
    assert one(build(inst, accel="kvm", pause=early), "-initrd") == f"{inst.absolute()}/initrd"


def test_tcg_cmdline_blacklists_accelerator_modules_and_self_tests(inst: Path) -> None:
    with_kernel(inst, cmdline="root=LABEL=lima-root console=ttyS0 quiet")
    words = one(build(inst, accel="tcg"), "-append").split()
    assert words[:3] == ["root=LABEL=lima-root", "console=ttyS0", "quiet"]
    assert "cryptomgr.notests" in words
    assert "mitigations=off" in words
    assert "tsc=reliable" in words  # TCG's TSC is one counter for all vCPUs
    blacklist = [w for w in words if w.startswith("module_blacklist=")]
    assert len(blacklist) == 1
    listed = set(blacklist[0].split("=")[1].split(","))
    assert {"kvm", "kvm_amd", "kvm_intel", "aesni_intel", "powernow_k8"} <= listed
    # The same list for udev's kmod, which then does not read and verify them first.
    (modprobe,) = [w for w in words if w.startswith("modprobe.blacklist=")]
    assert set(modprobe.split("=")[1].split(",")) == listed
    # Forced by QEMU_SYSTEM_*: the forced accelerator decides.
    forced = build(inst, accel="kvm", binary=[BIN[0], "-accel", "tcg"])
    assert "cryptomgr.notests" in one(forced, "-append").split()


def test_tcg_cmdline_keeps_the_images_own_choices(inst: Path) -> None:
    with_kernel(inst, cmdline="console=ttyS0 module_blacklist=floppy cryptomgr.notests=0 "
                "mitigations=auto tsc=unstable")
    assert one(build(inst, accel="tcg"), "-append") == (
        "console=ttyS0 module_blacklist=floppy cryptomgr.notests=0 mitigations=auto "
        "tsc=unstable"
    )


def test_tcg_cmdline_tsc_only_for_x86_64() -> None:
    assert "tsc=reliable" not in qemu.tcg_cmdline("console=ttyAMA0", "aarch64").split()
    assert "tsc=reliable" in qemu.tcg_cmdline("console=ttyS0", "x86_64").split()


def test_kernel_without_initrd_cmdline_or_qboot(inst: Path) -> None:
    with_kernel(inst, initrd=False, cmdline=None)
    argv = build(inst, host=dataclasses.replace(HOST, qboot=None))
    assert one(argv, "-kernel").endswith("/kernel")
    for option in ("-initrd", "-append", "-bios"):
        assert option not in argv


def test_no_kernel_boots_uefi_from_disk(inst: Path) -> None:
    argv = build(inst)
    for option in ("-kernel", "-initrd", "-append", "-bios"):
        assert option not in argv
    assert "if=pflash,format=raw,readonly=on,file=/fw/OVMF_CODE.fd" in values(argv, "-drive")
    assert one(argv, "-boot") == "order=c,splash-time=0,menu=on"


def test_no_kernel_legacy_bios(inst: Path) -> None:
    argv = build(inst, make_spec(firmware_legacy_bios=True))
    assert not any(d.startswith("if=pflash") for d in values(argv, "-drive"))
    assert "-bios" not in argv
    assert one(argv, "-boot").startswith("order=c")


def test_no_kernel_and_no_uefi_firmware_is_a_clear_error(inst: Path) -> None:
    with pytest.raises(PermanentError, match=r"legacyBIOS"):
        build(inst, host=dataclasses.replace(HOST, uefi_code=None))


def test_aarch64_uses_virt_machine(inst: Path) -> None:
    argv = build(inst, make_spec(arch="aarch64"), binary=["/usr/bin/qemu-system-aarch64"])
    assert one(argv, "-machine") == "virt"
    assert "if=pflash,format=raw,readonly=on,file=/fw/OVMF_CODE.fd" in values(argv, "-drive")


# ---- network ------------------------------------------------------------------------------


def test_user_network_restricted(inst: Path) -> None:
    netdev = one(build(inst, ssh_port=41234), "-netdev")
    assert netdev.split(",") == [
        "user",
        "id=net0",
        "net=192.168.5.0/24",
        "dhcpstart=192.168.5.15",
        "hostfwd=tcp:127.0.0.1:41234-:22",
        "restrict=on",
    ]


def test_user_network_unrestricted(inst: Path) -> None:
    netdev = one(build(inst, make_spec(qemu=QemuOptions(restrict_network=False))), "-netdev")
    assert "restrict" not in netdev
    assert "hostfwd=tcp:127.0.0.1:60022-:22" in netdev


def test_nic_has_stable_lima_mac_and_no_rom(inst: Path, tmp_path: Path) -> None:
    nic = [d for d in values(build(inst), "-device") if d.startswith("virtio-net-pci")]
    assert len(nic) == 1
    mac = re.search(r"mac=([0-9a-f:]+)", nic[0])
    assert mac is not None
    assert re.fullmatch(r"52:55:55(:[0-9a-f]{2}){3}", mac.group(1))
    assert nic[0].endswith(",romfile=")
    # Lima's derivation, written out independently: 52:55:55 + sha256(machine id + dir)[:3].
    digest = hashlib.sha256((HOST.machine_id + str(inst.absolute())).encode()).digest()
    assert mac.group(1) == "52:55:55:" + ":".join(f"{b:02x}" for b in digest[:3])
    # Different for another instance or another machine.
    (tmp_path / "other").mkdir()
    other_dir = [d for d in values(build(tmp_path / "other"), "-device") if "virtio-net" in d]
    assert other_dir and mac.group(1) not in other_dir[0]
    assert mac_address(str(inst), "m") != mac_address(str(inst), "n")


def test_invalid_ssh_port(inst: Path) -> None:
    with pytest.raises(ValueError, match="ssh_port"):
        build(inst, ssh_port=0)


# ---- devices, display, serial, guest agent, QMP, pidfile ----------------------------------


def test_rng_display_none_and_no_vga(inst: Path) -> None:
    argv = build(inst)
    assert "virtio-rng-pci" in values(argv, "-device")
    assert one(argv, "-display") == "none"
    assert "virtio-vga" not in values(argv, "-device")


def test_display_other_than_none_adds_video_devices(inst: Path) -> None:
    argv = build(inst, make_spec(video_display="default"))
    assert one(argv, "-display") == "default"
    assert "virtio-vga" in values(argv, "-device")


def test_serial_guest_agent_qmp_and_pidfile(inst: Path) -> None:
    argv = build(inst)
    d = inst.absolute()
    chardevs = values(argv, "-chardev")
    assert (
        f"socket,id=char-serial,path={d}/serial.sock,server=on,wait=off,logfile={d}/serial.log"
        in chardevs
    )
    assert one(argv, "-serial") == "chardev:char-serial"
    assert f"socket,id=char-ga,path={d}/ga.sock,server=on,wait=off" in chardevs
    devices = values(argv, "-device")
    assert "virtio-serial-pci,id=virtio-serial0" in devices
    assert (
        "virtserialport,bus=virtio-serial0.0,chardev=char-ga,name=io.lima-vm.guest_agent.0"
        in devices
    )
    assert f"socket,id=char-qmp,path={d}/qmp.sock,server=on,wait=off" in chardevs
    assert one(argv, "-qmp") == "chardev:char-qmp"
    assert one(argv, "-pidfile") == f"{d}/qemu.pid"


def test_relative_instance_dir_becomes_absolute(
    inst: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inst.parent)
    argv = build(Path(inst.name))
    assert one(argv, "-pidfile") == f"{inst}/qemu.pid"


# ---- socket path length -------------------------------------------------------------------


def test_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 100)
    deep.mkdir()
    with pytest.raises(PermanentError, match=r"too long.*qmp\.sock|too long.*\.sock"):
        build(deep)


def test_check_socket_paths_uses_the_longest_socket() -> None:
    # The whole socket path must stay below UNIX_PATH_MAX bytes (Lima's rule).
    limit = UNIX_PATH_MAX - len("/" + qemu.LONGEST_SOCK)
    qemu.check_socket_paths(Path("/" + "a" * (limit - 2)))
    with pytest.raises(PermanentError, match="shorter LIMA_HOME"):
        qemu.check_socket_paths(Path("/" + "a" * (limit - 1)))
