"""The libvirt side of benchmarks/libvirt_compare.py: the programs it may start, libvirt
from Debian packages when missing, /dev/kvm as udev would set it, a libvirtd to talk to,
the NoCloud seed and the `virt-install` command of one domain, and removing it.

Only benchmarks/libvirt_compare.py (and its unit test) import this.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lima.drivers.cidata import SeedFile, write_iso
from lima.drivers.guest import SLIRP_IP_ADDRESS, SLIRP_NETWORK

KVM = "/dev/kvm"
URI = "qemu:///system"
DOMAIN_PREFIX = "libvirt-compare"
CPUS, MEMORY_MIB = 2, 2048

# The programs the script needs, and the Debian package of each (installed when missing).
NEEDED = {
    "virsh": "libvirt-clients",
    "virt-install": "virtinst",
    "libvirtd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
}
# Every program the benchmark starts (its unit test checks the script's docstring names each).
PROGRAMS = ("apt-get", "virsh", "virt-install", "libvirtd", "virtlogd", "qemu-img", "ssh",
            "python3")


def _listed(program: str) -> bool:
    name = Path(program).name
    return name in PROGRAMS or (name.startswith("python") and program == sys.executable)


def sh(argv: Sequence[str], *, timeout: float = 120, check: bool = False,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one program to its end (argv[0] must be one of PROGRAMS)."""
    assert _listed(argv[0]), argv[0]
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=check, env=env, stdin=subprocess.DEVNULL)


def start(argv: Sequence[str], *, env: dict[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[str]:
    """Start one program in the background (argv[0] must be one of PROGRAMS)."""
    assert _listed(argv[0]), argv[0]
    out = open(log, "a") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT if log else out,
                            stdin=subprocess.DEVNULL, text=True, env=env)


# -- setup: packages, /dev/kvm, the daemon --------------------------------------------------


def missing_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The packages to install: those of the NEEDED programs `which` does not find."""
    return sorted({pkg for prog, pkg in NEEDED.items() if which(prog) is None})


def install_libvirt() -> None:
    packages = missing_packages()
    if not packages:
        return
    print(f"installing from Debian packages: {' '.join(packages)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = sh(["apt-get", "install", "-y", "--no-install-recommends", *packages],
             timeout=1800, env=env)
    if res.returncode != 0:
        raise SystemExit(f"apt-get install failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


@contextlib.contextmanager
def kvm_for_libvirt(path: str = KVM) -> Iterator[None]:
    """/dev/kvm as udev would leave it (root:kvm 0660) while inside; put back after."""
    try:
        st = os.stat(path)
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        yield
        return
    changed = (st.st_gid, st.st_mode & 0o7777) != (kvm_gid, 0o660)
    if changed:
        print(f"{path}: root:kvm 0660 for the run (was {st.st_uid}:{st.st_gid} "
              f"{st.st_mode & 0o7777:04o})", flush=True)
        os.chown(path, 0, kvm_gid)
        os.chmod(path, 0o660)
    try:
        yield
    finally:
        if changed:
            os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, st.st_mode & 0o7777)


def _virsh_ok() -> bool:
    try:
        return sh(["virsh", "-c", URI, "version"], timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def libvirt_daemon(work: Path) -> Iterator[None]:
    """A libvirtd to talk to: the running one, else virtlogd + libvirtd started here."""
    if _virsh_ok():
        yield
        return
    print("starting virtlogd and libvirtd (no systemd here)", flush=True)
    procs = [start(["virtlogd"], log=work / "virtlogd.log"),
             start(["libvirtd"], log=work / "libvirtd.log")]
    try:
        deadline = time.monotonic() + 60
        while not _virsh_ok():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"libvirtd did not come up; see {work}/libvirtd.log")
            time.sleep(0.5)
        yield
    finally:
        for p in reversed(procs):
            end_process(p)


def end_process(proc: subprocess.Popen[str], grace: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the libvirt domain ---------------------------------------------------------------------


@dataclass(frozen=True)
class Guest:
    """What both sides share: the image's files, and the seed's contents."""

    image: Path
    kernel: Path
    initrd: Path
    cmdline: str
    user_data: str
    network_config: str
    hostname: str


def meta_data(iid: str, hostname: str) -> str:
    return f"instance-id: {iid}\nlocal-hostname: {hostname}\n"


def build_seed(dest: Path, guest: Guest, iid: str) -> Path:
    """The NoCloud seed ISO (label cidata) of a libvirt domain, as limapy writes its own."""
    files = [SeedFile("user-data", guest.user_data.encode()),
             SeedFile("meta-data", meta_data(iid, guest.hostname).encode()),
             SeedFile("network-config", guest.network_config.encode())]
    write_iso(files, dest)
    return dest


def netdev(port: int) -> str:
    """limapy's slirp network: same subnet and address, restrict=on, ssh on 127.0.0.1."""
    return (f"user,id=net0,net={SLIRP_NETWORK},dhcpstart={SLIRP_IP_ADDRESS},restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{port}-:22")


def virt_install_argv(name: str, guest: Guest, overlay: Path, seed: Path, port: int) -> list[str]:
    """`virt-install --import` of one domain: TCG, direct kernel boot, seed on virtio-scsi,
    and the network passed to qemu as is (libvirt 9.0's user interface has no restrict)."""
    args = f'kernel={guest.kernel},initrd={guest.initrd},kernel_args="{guest.cmdline}"'
    return [
        "virt-install", "--connect", URI, "--name", name, "--import", "--noautoconsole",
        "--virt-type", "qemu", "--machine", "q35", "--cpu", "mode=maximum",
        "--vcpus", str(CPUS), "--memory", str(MEMORY_MIB),
        "--osinfo", "linux2022", "--boot", args,
        "--disk", f"path={overlay},format=qcow2,bus=virtio",
        "--controller", "type=scsi,model=virtio-scsi",
        "--disk", f"path={seed},device=cdrom,bus=scsi,readonly=on",
        "--network", "none", "--graphics", "none", "--console", "pty,target_type=serial",
        "--rng", "/dev/urandom",
        f"--qemu-commandline=-netdev {netdev(port)}",
        # An explicit slot on the root bus: without one QEMU takes slot 1, which libvirt
        # gives its first pcie-root-port.
        "--qemu-commandline=-device virtio-net-pci,netdev=net0,romfile=,bus=pcie.0,addr=0x10",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def domain_state(name: str) -> str:
    return sh(["virsh", "-c", URI, "domstate", name], timeout=30).stdout.strip()


def remove_domain(name: str) -> None:
    """Destroy and undefine one of this script's own domains (never any other)."""
    assert name.startswith(f"{DOMAIN_PREFIX}-{os.getpid()}-"), name
    sh(["virsh", "-c", URI, "destroy", name], timeout=60)
    sh(["virsh", "-c", URI, "undefine", name, "--remove-all-storage"], timeout=60)
