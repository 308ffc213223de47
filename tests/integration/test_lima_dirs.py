"""A tiny guest whose instance directory is laid out as real Lima 2.x lays it out (`disk`,
no basedisk/diffdisk, Lima's ssh pair in `_config`), started, written to, stopped and
deleted through the real CLI: QEMU boots Lima's `disk`, the guest's write lands in it, and
no disk of limapy's own appears beside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.conftest import REPO, Limactl, _cmdline, qemu_pids_for

MARK = b"limapy-in-a-lima2-disk"
MiB = 1 << 20


def lima_ssh_pair(home: Path) -> bytes:
    """`_config/user` and `user.pub` as Lima's ssh-keygen leaves them; the public line."""
    key = Ed25519PrivateKey.generate()
    config = home / "_config"
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "user").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    (config / "user").chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH) + b" lima\n"
    (config / "user.pub").write_bytes(public)
    return public


def test_lima2_directory_starts_on_its_own_disk(limactl: Limactl, tmp_path: Path) -> None:
    public = lima_ssh_pair(limactl.home)
    tiny = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", tiny)
    limactl("create", str(tiny), timeout=300)
    inst = limactl.home / "t"
    # Lima 2's layout: one whole `disk` (the image it downloaded, renamed), no overlay.
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(inst / "diffdisk"),
                    str(inst / "disk")], check=True, capture_output=True)
    for name in ("diffdisk", "basedisk", "basedisk.json"):
        (inst / name).unlink()
    (inst / "lima-version").write_text("2.2.0")

    limactl("start", "t", timeout=300)
    [qemu] = qemu_pids_for(limactl.home)
    cmdline = _cmdline(qemu)
    assert f"file={inst / 'disk'},format=qcow2" in cmdline
    assert "diffdisk" not in cmdline and "basedisk" not in cmdline
    # limactl got in with Lima's own key: the pair is as Lima left it.
    assert (limactl.home / "_config" / "user.pub").read_bytes() == public
    limactl("shell", "t", "sudo", "sh", "-c",
            f"printf {MARK.decode()} | dd of=/dev/vda bs=1M seek=1 conv=notrunc && sync")
    limactl("stop", "t", timeout=120)

    assert not (inst / "diffdisk").exists() and not (inst / "basedisk").exists()
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(inst / "disk"), str(raw)],
                   check=True, capture_output=True)
    with raw.open("rb") as f:
        f.seek(MiB)
        assert f.read(len(MARK)) == MARK  # the guest wrote into Lima's disk

    limactl("delete", "t")
    assert not inst.exists()
