"""Boot a built image (build:tiny, build:debian-12) directly with qemu, without limactl.

Used by test_build_images.py and benchmarks/build_images.py: a minimal cidata ISO made
here with pycdlib, a qemu started with Lima's device layout (virtio-scsi CD, virtio-net,
user networking with restrict=on and a loopback-only ssh forward), an `SSH-` banner wait
and the system ssh client. The caller must always call Guest.stop() (a finally).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from lima.drivers.images.build import BuiltImage

USER = "tester"
UID = 1234
HOME = "/home/tester.linux"
IID = "iid-build-test-1"

BOOT_SH = """#!/bin/sh
# test boot.sh: the markers the real one writes, and nothing else.
set -eu
. "$LIMA_CIDATA_MNT/lima.env"
echo "$LIMA_CIDATA_IID" >/run/lima-ssh-ready
echo "$LIMA_CIDATA_IID" >/run/lima-boot-done
"""


# What the real cidata's bootcmd does on Debian, in one line. The network stage may run
# before udev made the CD's by-label link: blkid finds the device then.
BOOTCMD = (
    "mkdir -p /mnt/lima-cidata; DEV=/dev/disk/by-label/cidata;"
    " [ -e $DEV ] || DEV=$(blkid -L cidata); mountpoint -q /mnt/lima-cidata"
    " || mount -o ro $DEV /mnt/lima-cidata;"
    " LIMA_CIDATA_MNT=/mnt/lima-cidata sh /mnt/lima-cidata/boot.sh"
)


def user_data(pubkey: str) -> str:
    return f"""#cloud-config
ssh_genkeytypes: [ed25519]
ssh_pwauth: false
users:
  - name: "{USER}"
    uid: {UID}
    homedir: "{HOME}"
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    lock_passwd: true
    ssh_authorized_keys:
      - "{pubkey}"
bootcmd:
  - {BOOTCMD}
"""


# cloud-init 22.4 (bookworm) does not know `to: default`.
NETWORK_CONFIG = """version: 2
ethernets:
  eth0:
    match:
      name: eth0
    addresses: [192.168.5.15/24]
    routes:
      - to: 0.0.0.0/0
        via: 192.168.5.2
    nameservers:
      addresses: [192.168.5.3]
"""


def make_cidata(path: Path, pubkey: str, hostname: str = "lima-buildtest") -> None:
    files = {
        "user-data": user_data(pubkey),
        "meta-data": f"instance-id: {IID}\nlocal-hostname: {hostname}\n",
        "network-config": NETWORK_CONFIG,
        "lima.env": (
            f"LIMA_CIDATA_USER={USER}\nLIMA_CIDATA_UID={UID}\nLIMA_CIDATA_HOME={HOME}\n"
            f"LIMA_CIDATA_IID={IID}\n"
        ),
        "boot.sh": BOOT_SH,
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="cidata", rock_ridge="1.09", joliet=3)
    for i, (name, text) in enumerate(files.items()):
        data = text.encode()
        mode = 0o100755 if name.endswith(".sh") else 0o100644
        iso.add_fp(
            io.BytesIO(data), len(data), f"/F{i}.;1",
            rr_name=name, joliet_path=f"/{name}", file_mode=mode,
        )
    iso.write(str(path))
    iso.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_banner(port: int, deadline: float) -> float:
    """Seconds until an `SSH-` banner arrived; short overlapping-ish attempts."""
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.settimeout(1.0)
                if s.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no ssh banner on 127.0.0.1:{port}")


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    port: int
    key: Path
    serial: Path
    started: float

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh", "-i", str(self.key), "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10", f"{USER}@127.0.0.1", command,
            ],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def wait_file(self, path: str, deadline: float) -> str:
        last = ""
        while time.monotonic() < deadline:
            res = self.ssh(f"cat {path}")
            if res.returncode == 0 and res.stdout.strip():
                return res.stdout.strip()
            last = res.stderr
            time.sleep(1)
        raise TimeoutError(f"{path} never appeared: {last}\n{self.serial_tail()}")

    def serial_tail(self) -> str:
        try:
            return self.serial.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def powerdown(self, timeout: float = 30) -> float:
        """QMP system_powerdown (the ACPI power button); seconds until qemu exited."""
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.serial.parent / "qmp.sock"))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while b'"return"' not in f.readline():
                    pass
        self.proc.wait(timeout=timeout)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def boot(img: BuiltImage, workdir: Path, *, memory: str = "256") -> Guest:
    """Start qemu on `img` with a fresh overlay and cidata; returns once qemu runs."""
    key = workdir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    cidata = workdir / "cidata.iso"
    make_cidata(cidata, (workdir / "id_ed25519.pub").read_text().strip())
    disk = workdir / "diffdisk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(img.image),
         str(disk), "8G"], check=True,
    )  # fmt: skip
    port = free_port()
    serial = workdir / "serial.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", memory,
        "-nodefaults", "-nographic", "-serial", f"file:{serial}", "-monitor", "none",
        "-drive", f"file={disk},if=virtio,format=qcow2,discard=on",
        "-drive", f"id=cdrom0,if=none,format=raw,readonly=on,file={cidata}",
        "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,bus=scsi0.0,drive=cdrom0",
        "-netdev", f"user,id=net0,net=192.168.5.0/24,restrict=on,"
                   f"hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
        "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
    ]  # fmt: skip
    if Path("/usr/share/qemu/qboot.rom").exists():
        argv += ["-bios", "/usr/share/qemu/qboot.rom"]
    if img.kernel:
        argv += ["-kernel", str(img.kernel), "-append", img.cmdline or ""]
    if img.initrd:
        argv += ["-initrd", str(img.initrd)]
    started = time.monotonic()
    with open(workdir / "qemu.stderr", "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    return Guest(proc, port, key, serial, started)
