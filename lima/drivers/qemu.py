"""The QEMU command line: which binary, and the argv that boots an instance.

The host agent calls `qemu_binary(arch)`, `lima.drivers.accel.detect_accel(arch)` and
then `qemu_argv(spec, inst_dir, ...)`, and spawns the result through the runner. The
argv builder starts no process and opens no socket: it reads only the instance's
kernel/initrd/kernel.cmdline (and the basedisk's ISO signature) plus the host facts
in `HostFiles`, which tests pass in. Layout follows Lima's pkg/qemu (q35, virtio disk,
slirp 192.168.5.0/24, serial/QMP/guest-agent sockets in the instance directory).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.drivers import display, virtfs, virtiofs
from lima.drivers.disklayout import lima2_disk, lima2_iso
from lima.drivers.guest import (
    GUEST_AGENT_PORT,
    HOST_RESOLVER_ADDRESS,
    SLIRP_IP_ADDRESS,
    SLIRP_NETWORK,
)
from lima.errors import PermanentError
from lima.schemas.arch import QEMU_ARCH
from lima.schemas.macaddr import mac_address
from lima.schemas.spec import InstanceSpec

log = logging.getLogger(__name__)

_MACHINE = {"x86_64": "q35", "aarch64": "virt", "armv7l": "virt", "riscv64": "virt"}

# The longest socket name in an instance directory: ssh's ControlPath plus the suffix
# ssh appends while it creates the master socket (Lima's LongestSock).
LONGEST_SOCK = paths.SSH_SOCK + ".1234567890123456"

QBOOT_ROM = Path("/usr/share/qemu/qboot.rom")
_OVMF_CANDIDATES = {
    "x86_64": (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/qemu/OVMF.fd",
        "/usr/share/edk2/x64/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
    ),
    "aarch64": (
        "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
        "/usr/share/AAVMF/AAVMF_CODE.fd",
        "/usr/share/edk2/aarch64/QEMU_EFI.fd",
    ),
    "armv7l": ("/usr/share/AAVMF/AAVMF32_CODE.fd",),
}

_Add = Callable[[str, str], None]  # the `add(option, value)` closure of qemu_argv
DataDisk = tuple[Path, str]  # an additional disk: (datadisk path, qemu format)

# Options whose presence in the QEMU_SYSTEM_* override means ours must not be added.
_SINGLE_OPTIONS = ("-machine", "-cpu", "-smp", "-m", "-boot", "-display", "-bios")


@dataclass(frozen=True)
class HostFiles:
    """Host facts the argv depends on, looked up once by `host_files()` (tests build them)."""

    machine_id: str = ""
    qboot: Path | None = None  # a fast firmware for direct kernel boot (x86_64)
    uefi_code: Path | None = None  # OVMF / AAVMF code image


def qemu_arch(arch: str) -> str:
    try:
        return QEMU_ARCH[arch]
    except KeyError:
        raise PermanentError(f"unsupported arch {arch!r} for QEMU") from None


def qemu_binary(arch: str) -> list[str]:
    """`[path of qemu-system-<arch>, extra args...]`.

    `QEMU_SYSTEM_X86_64` (`_AARCH64`, `_ARM`, ...) replaces the binary and may carry extra
    arguments, shell-split, as in Lima: "qemu-system-x86_64 -accel tcg" forces TCG.
    """
    suffix = qemu_arch(arch)
    env_key = "QEMU_SYSTEM_" + suffix.upper()
    words = [f"qemu-system-{suffix}"]
    override = os.environ.get(env_key, "").strip()
    if override:
        try:
            words = shlex.split(override)
        except ValueError as exc:
            raise PermanentError(f"cannot parse ${env_key} {override!r}: {exc}") from exc
        if len(words) > 1:
            log.warning("using extra QEMU arguments from $%s: %s", env_key, shlex.join(words[1:]))
    exe = shutil.which(words[0])
    if exe is None:
        hint = (
            f" (from ${env_key})" if override else " (install QEMU, e.g. the qemu-system package)"
        )
        raise PermanentError(f"{words[0]}: not found{hint}")
    return [exe, *words[1:]]


def _option_values(args: Sequence[str], *names: str) -> list[str]:
    """Values of `-opt value` (or `-opt=value`) occurrences of any of `names`."""
    values: list[str] = []
    for i, arg in enumerate(args):
        for name in names:
            if arg in (name, "-" + name) and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith((name + "=", "-" + name + "=")):
                values.append(arg.split("=", 1)[1])
    return values


def _has_option(args: Sequence[str], name: str) -> bool:
    """Whether `-name` (or `--name`, `-name=...`; `-M` for -machine) occurs in `args`."""
    aliases = ("-machine", "-M") if name == "-machine" else (name,)
    spellings = {a for alias in aliases for a in (alias, "-" + alias)}
    return any(a in spellings or a.split("=", 1)[0] in spellings for a in args)


def binary_accel(binary: Sequence[str]) -> str | None:
    """The accelerator the QEMU_SYSTEM_* extra arguments force, if any."""
    extra = list(binary[1:])
    if "-enable-kvm" in extra or "--enable-kvm" in extra:
        return "kvm"
    for value in _option_values(extra, "-accel"):
        first = value.split(",", 1)[0]
        return first.removeprefix("accel=").split(":", 1)[0]
    for value in _option_values(extra, "-machine", "-M"):
        for item in value.split(","):
            if item.startswith("accel="):
                return item.removeprefix("accel=").split(":", 1)[0]
    return None


def host_files(arch: str) -> HostFiles:
    """Look up the host facts `qemu_argv` needs (machine id, firmware images)."""
    machine_id = ""
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(candidate).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if machine_id:
            break
    qboot = QBOOT_ROM if arch == "x86_64" and QBOOT_ROM.is_file() else None
    uefi = next((Path(p) for p in _OVMF_CANDIDATES.get(arch, ()) if Path(p).is_file()), None)
    return HostFiles(machine_id=machine_id, qboot=qboot, uefi_code=uefi)


def check_socket_paths(inst_dir: Path, names: Sequence[str] = (LONGEST_SOCK,)) -> None:
    """Fail clearly when a unix socket in the instance directory would be too long to bind."""
    for name in names:
        sock = inst_dir / name
        size = len(os.fsencode(sock))
        if size >= paths.UNIX_PATH_MAX:
            raise PermanentError(
                f"instance directory {inst_dir} is too long: socket path {sock} has {size} bytes,"
                f" it must be less than {paths.UNIX_PATH_MAX} (use a shorter LIMA_HOME or"
                " instance name)"
            )


def _esc(value: str | Path) -> str:
    """A value inside a QEMU `key=value,...` option: commas are doubled."""
    return str(value).replace(",", ",,")


# The CPU model limapy gives an x86_64 guest under TCG: QEMU's "max" without the
# fast-string flags (ERMS, FSRM). With them the guest kernel copies and clears memory
# with `rep movsb` / `rep stosb` (page faults, reads and writes through the page cache,
# clear_page), which QEMU 7.2's TCG runs a byte per loop iteration, about 8 times slower
# than the `rep movsq` the kernel uses without them: touching 128 MiB of new pages took
# 0.55-0.75 s with them and 0.08-0.11 s without, and the Debian image reached Running
# 1-3 s sooner (README "Boot figures"). glibc's memcpy and memset did not change speed.
TCG_CPU_X86_64 = "max,-erms,-fsrm"


def cpu_model(spec: InstanceSpec, accel: str) -> str:
    """`spec.cpu_type`, else host (KVM) / max (TCG; TCG_CPU_X86_64 for x86_64); "host" is
    never given to TCG."""
    tcg = TCG_CPU_X86_64 if spec.arch == "x86_64" else "max"
    cpu = spec.cpu_type or ("host" if accel == "kvm" else tcg)
    if accel != "kvm" and (cpu == "host" or cpu.startswith("host,")):
        # A spec filled on a host where KVM looked usable may say "host"; TCG rejects it.
        cpu = tcg + cpu.removeprefix("host")
    return cpu


def tcg_tb_size_mib(memory_mib: int) -> int:
    """TCG translation cache: QEMU's 1 GiB default is more than a small guest needs."""
    return max(256, min(1024, memory_mib // 4))


# Modules udev would load for CPU features that TCG emulates but a guest gains nothing
# from: KVM (nested virtualization inside an emulated CPU), the kernel's crypto
# accelerators (OpenSSH and OpenSSL use the instructions directly) and AMD's cpufreq
# driver (no power states to switch). Each costs 0.3-2 s of guest CPU at boot under TCG,
# mostly crypto self-tests; measured in README "Boot figures".
TCG_MODULE_BLACKLIST = (
    "kvm", "kvm_amd", "kvm_intel", "irqbypass", "ccp", "aesni_intel", "ghash_clmulni_intel",
    "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "crct10dif_pclmul", "crc32_pclmul",
    "polyval_clmulni", "blake2s_x86_64", "powernow_k8",
)  # fmt: skip


def tcg_cmdline(cmdline: str, arch: str = "x86_64") -> str:
    """A direct-boot kernel command line tuned for TCG, when the image does not say otherwise.

    Adds `module_blacklist=` and `modprobe.blacklist=` (TCG_MODULE_BLACKLIST: the kernel
    refuses them, and udev's kmod does not even try them, which otherwise read, hashed and
    signature-checked each module, with the modules it depends on loaded first, once per
    matching device, before the kernel's refusal), `cryptomgr.notests` (the kernel's
    self-tests of every crypto algorithm it registers run at emulated speed) and
    `mitigations=off`: the speculative-execution mitigations (retpolines, return stack
    filling on every context switch, barriers) guard against the CPU's speculation, and
    under TCG the guest's code never reaches the host CPU as itself: QEMU translates it,
    indirect branches included, so the mitigations only cost (3% less guest CPU to Running
    for the Debian image: README "Boot figures"). Only under TCG: with KVM the guest keeps
    its accelerators, nested virtualization and mitigations.

    x86_64 also gets `tsc=reliable`. TCG's TSC is one counter for all vCPUs (QEMU reads
    it under a lock and never lets it go back), but Linux trusts the TSC of a non-Intel
    CPU with more than one core only when told: it took HPET instead, whose every read
    (each clock_gettime, 0.9 us against 0.08 us) is an emulated MMIO access.
    """
    words = cmdline.split()
    keys = {w.split("=", 1)[0] for w in words}
    if keys & {"module_blacklist", "modprobe.blacklist"}:
        keys |= {"module_blacklist", "modprobe.blacklist"}  # the image blacklists itself
    listed = ",".join(TCG_MODULE_BLACKLIST)
    ours = [f"module_blacklist={listed}", f"modprobe.blacklist={listed}", "cryptomgr.notests",
            "mitigations=off"]
    if arch == "x86_64":
        ours.append("tsc=reliable")
    return " ".join([*words, *(w for w in ours if w.split("=", 1)[0] not in keys)])


def _read_cmdline(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return ""


def qemu_command(
    spec: InstanceSpec, inst_dir: Path, ssh_port: int, data_disks: Sequence[DataDisk] = (),
    *, pause: str = "",
) -> list[str]:
    """The full qemu command for an instance on this host: binary (QEMU_SYSTEM_* honoured),
    accelerator (probed; detect_accel warns once when it falls back to TCG), then argv.
    `pause`: see qemu_argv."""
    from lima.drivers.accel import detect_accel

    binary = qemu_binary(spec.arch)
    if virtfs.uses_virtfs(spec):
        virtfs.create_host_dirs(spec)  # QEMU refuses a -virtfs path that does not exist
    accel = detect_accel(spec.arch, binary=binary, cpu=cpu_model(spec, "kvm"))
    return qemu_argv(spec, inst_dir, ssh_port=ssh_port, accel=accel.name, binary=binary,
                     data_disks=data_disks, pause=pause)


def qemu_argv(
    spec: InstanceSpec,
    inst_dir: Path,
    *,
    ssh_port: int,
    accel: str,
    binary: list[str],
    host: HostFiles | None = None,
    data_disks: Sequence[DataDisk] = (),
    pause: str = "",
) -> list[str]:
    """The full argv (binary first) that boots `spec` from `inst_dir`.

    `pause`: a pause word (`limapy.pause`, `limapy.pause.early`) a direct kernel boot's
    command line gets when the image's says its initramfs knows it (a boot that may load
    or save a boot template: lima.drivers.boottemplate).

    `data_disks`: the `additionalDisks` as (datadisk path, format), in spec order, locked
    by the caller (lima.drivers.disks.attach_for_start); the guest sees them as vdb, vdc...

    `accel` is "kvm" or "tcg" (from detect_accel); an accelerator in the binary's extra
    arguments wins and ours is then not added. `host` defaults to `host_files(arch)`.
    Raises PermanentError for an unsupported arch, a socket path that is too long, or
    missing UEFI firmware when the instance has no kernel of its own.
    """
    if not 0 < ssh_port < 65536:
        raise ValueError(f"ssh_port out of range: {ssh_port}")
    arch = spec.arch
    qemu_arch(arch)
    if arch not in _MACHINE:
        raise PermanentError(f"unsupported arch {arch!r} for the QEMU driver")
    if host is None:
        host = host_files(arch)
    inst_dir = inst_dir.absolute()
    check_socket_paths(inst_dir, (paths.QMP_SOCK, paths.SERIAL_SOCK, paths.GA_SOCK,
                                  paths.DNS_SOCK))

    extra = list(binary[1:])
    forced = binary_accel(binary)
    effective = forced or accel
    args = list(binary)

    def add(option: str, value: str) -> None:
        # Like Lima: an option the user already set through QEMU_SYSTEM_* is kept as is.
        if option in _SINGLE_OPTIONS and _has_option(extra, option):
            log.warning("not adding QEMU argument %s %s: set by $QEMU_SYSTEM_*", option, value)
            return
        args.extend((option, value))

    args.extend(("-name", f"lima-{spec.name}"))
    add("-machine", _MACHINE[arch])
    if forced is None:
        if accel == "tcg":
            args.extend(("-accel", f"tcg,thread=multi,tb-size={_tb_size(spec)}"))
        else:
            args.extend(("-accel", accel))
    add("-cpu", cpu_model(spec, effective))
    add("-smp", f"{spec.cpus},sockets=1,cores={spec.cpus},threads=1")
    add("-m", str(spec.memory // (1024 * 1024)))
    args.extend(virtiofs.memory_args(spec))
    # No default NIC, VGA, CD-ROM, floppy, monitor or serial: everything is listed below.
    args.append("-nodefaults")

    args.extend(_boot_args(spec, inst_dir, host, add, effective, pause))
    args.extend(_disk_args(inst_dir, data_disks))
    args.extend(_mount_args(spec, inst_dir))
    args.extend(_net_args(spec, inst_dir, host, ssh_port))
    args.extend(("-device", "virtio-rng-pci"))
    args.extend(display.display_args(spec, add))
    args.extend(_channel_args(inst_dir))
    args.extend(("-pidfile", str(inst_dir / paths.QEMU_PID)))
    return args


def _tb_size(spec: InstanceSpec) -> int:
    return tcg_tb_size_mib(spec.memory // (1024 * 1024))


def _boot_args(
    spec: InstanceSpec, inst_dir: Path, host: HostFiles, add: _Add, accel: str,
    pause: str = "",
) -> list[str]:
    out: list[str] = []
    kernel = inst_dir / paths.KERNEL
    if kernel.is_file():
        # Direct kernel boot: the image's own kernel, initrd and command line.
        out += ["-kernel", str(kernel)]
        initrd = inst_dir / paths.INITRD
        cmdline = _read_cmdline(inst_dir / paths.KERNEL_CMDLINE)
        if cmdline and accel == "tcg":
            cmdline = tcg_cmdline(cmdline, spec.arch)
        if pause:
            from lima.drivers.boottemplate import CAPABILITY, EARLY_WORD

            if CAPABILITY.get(pause) in cmdline.split():
                cmdline += " " + pause
                early = inst_dir / paths.INITRD_EARLY
                if pause == EARLY_WORD and initrd.is_file() and early.is_file():
                    initrd = early  # the initrd and what only a boot paused early uses
        if initrd.is_file():
            out += ["-initrd", str(initrd)]
        if cmdline:
            out += ["-append", cmdline]
        if host.qboot is not None:
            # qboot skips SeaBIOS's device scan: about 1.5 s faster under TCG.
            add("-bios", str(host.qboot))
        return out
    if spec.arch == "x86_64" and spec.firmware_legacy_bios:
        pass  # QEMU's default SeaBIOS
    else:
        if spec.firmware_legacy_bios:
            log.warning("firmware.legacyBIOS is not supported for arch %s; using UEFI", spec.arch)
        if host.uefi_code is None:
            hint = " (hint: set firmware.legacyBIOS: true)" if spec.arch == "x86_64" else ""
            raise PermanentError(f"no UEFI firmware found for {spec.arch}{hint}")
        out += ["-drive", f"if=pflash,format=raw,readonly=on,file={_esc(host.uefi_code)}"]
    lima_iso = lima2_iso(inst_dir)
    if lima_iso is not None:  # Lima 2's layout: the ISO it booted is `iso`
        add("-boot", "order=d,splash-time=0,menu=on")
        out += ["-drive", f"file={_esc(lima_iso)},format=raw,media=cdrom,readonly=on"]
        return out
    if lima2_disk(inst_dir) is not None:
        add("-boot", "order=c,splash-time=0,menu=on")
        return out
    basedisk = inst_dir / paths.BASEDISK
    # Deferred: the images package costs ~140 ms to import, and the host agent's argv
    # needs only this one check from it.
    from lima.drivers.images.imagecheck import is_iso

    if is_iso(basedisk):
        add("-boot", "order=d,splash-time=0,menu=on")
        out += ["-drive", f"file={_esc(basedisk)},format=raw,media=cdrom,readonly=on"]
    else:
        add("-boot", "order=c,splash-time=0,menu=on")
    return out


def _disk_args(inst_dir: Path, data_disks: Sequence[DataDisk] = ()) -> list[str]:
    diffdisk, boot_fmt = inst_dir / paths.DIFFDISK, "qcow2"
    lima_disk = lima2_disk(inst_dir)
    if lima_disk is not None:
        from lima.drivers.images.imagecheck import lima2_disk_format

        diffdisk, boot_fmt = lima_disk, lima2_disk_format(lima_disk)
    cidata = inst_dir / paths.CIDATA_ISO
    extra: list[str] = []
    for path, fmt in data_disks:
        # Right after the boot disk (vda): the guest names them vdb, vdc... in this order,
        # which is what the seed tells the boot script (Lima's diskDeviceNameFromOrder).
        extra += ["-drive", f"file={_esc(path)},format={fmt},if=virtio,discard=on"]
    return [
        "-drive", f"file={_esc(diffdisk)},format={boot_fmt},if=virtio,discard=on",
        *extra,
        # cidata as a SCSI CD-ROM, as Lima attaches it (the guest finds it by label).
        "-drive", f"id=cdrom0,if=none,format=raw,readonly=on,file={_esc(cidata)}",
        "-device", "virtio-scsi-pci,id=scsi0",
        "-device", "scsi-cd,bus=scsi0.0,drive=cdrom0",
    ]  # fmt: skip


def _mount_args(spec: InstanceSpec, inst_dir: Path) -> list[str]:
    """One device per mount for 9p (-virtfs) and virtiofs (vhost-user-fs); none otherwise."""
    out: list[str] = []
    if spec.mount_type == "9p":
        for m in spec.mounts:
            out += ["-virtfs", virtfs.virtfs_option(m)]
    return out + virtiofs.device_args(spec, inst_dir)


def _net_args(spec: InstanceSpec, inst_dir: Path, host: HostFiles, ssh_port: int) -> list[str]:
    netdev = (
        f"user,id=net0,net={SLIRP_NETWORK},dhcpstart={SLIRP_IP_ADDRESS},"
        f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    )
    if spec.qemu.restrict_network:
        # The guest reaches nothing but the host's forwards (and slirp's own services).
        netdev += ",restrict=on"
    dns: list[str] = []
    if uses_host_resolver(spec):
        # hostResolver: the guest's TCP connections to HOST_RESOLVER_ADDRESS:53 go to the
        # host agent's DNS server on dns.sock (lima.drivers.hostagent.dns); a guestfwd is
        # the one way into the host that restrict=on leaves open. reconnect: qemu starts
        # before the server listens, and finds the server of a restarted host agent.
        sock = _esc(inst_dir / paths.DNS_SOCK)
        dns = ["-chardev", f"socket,id=char-dns,path={sock},reconnect=1"]
        netdev += f",guestfwd=tcp:{HOST_RESOLVER_ADDRESS}:53-chardev:char-dns"
    mac = mac_address(str(inst_dir), host.machine_id)  # Lima: keyed by the instance dir
    # romfile= (empty): no iPXE option ROM, nothing to network-boot from.
    return [*dns, "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=net0,mac={mac},romfile="]


def uses_host_resolver(spec: InstanceSpec) -> bool:
    """hostResolver.enabled, unless `dns:` names the guest's servers (Lima: they win)."""
    return spec.host_resolver_enabled and not spec.dns


def _channel_args(inst_dir: Path) -> list[str]:
    serial_sock = _esc(inst_dir / paths.SERIAL_SOCK)
    serial_log = _esc(inst_dir / paths.SERIAL_LOG)
    ga_sock = _esc(inst_dir / paths.GA_SOCK)
    qmp_sock = _esc(inst_dir / paths.QMP_SOCK)
    return [
        "-chardev",
        f"socket,id=char-serial,path={serial_sock},server=on,wait=off,logfile={serial_log}",
        "-serial", "chardev:char-serial",
        "-chardev", f"socket,id=char-ga,path={ga_sock},server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial0",
        "-device",
        f"virtserialport,bus=virtio-serial0.0,chardev=char-ga,name={GUEST_AGENT_PORT}",
        "-chardev", f"socket,id=char-qmp,path={qmp_sock},server=on,wait=off",
        "-qmp", "chardev:char-qmp",
    ]  # fmt: skip
