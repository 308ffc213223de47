"""Instance directories as real Lima 2.x lays them out (`disk`, `iso`, `image`, the ssh pair
in `_config`), through limapy's real list, validate, driver steps and delete (real
qemu-img, no VM): recognised, booted from Lima's own disk, never given new disks beside
it, and deleted without losing what is not Lima's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lima import paths, schemas
from lima.drivers import runner
from lima.drivers.images import check_instance_disks, qemu_img_info
from lima.drivers.images.disks import candidates
from lima.drivers.instance import QemuDriver, grow_diffdisk
from lima.drivers.qemu import HostFiles, qemu_argv
from lima.errors import PermanentError
from lima.states.actions import CreateInstance
from lima.states.model import DesiredState, RunState
from tests.component.cli import run_cli

# What Lima 2.2 leaves in lima.yaml: the template as the user gave it.
LIMA_YAML = """\
minimumLimaVersion: 2.2.0
vmType: qemu
arch: x86_64
images:
- location: https://example.invalid/server-amd64.img
  arch: x86_64
  variant: server
- location: https://example.invalid/minimal-amd64.img
  arch: x86_64
  variant: minimal
cpus: 1
memory: 512MiB
disk: 64MiB
mounts: []
user:
  passwordlessSudo: true
audio:
  interface: ""
tpm: false
"""
# Files a Lima 2 instance that has booted once also holds (contents do not matter here).
BOOT_FILES = ("cidata.iso", "serial.log", "serialp.log", "serialv.log", "ha.stdout.log",
              "ha.stderr.log", "ssh.config", "qemu-efi-code.fd")
MiB = 1 << 20


def qemu_img(*args: str | Path) -> None:
    runner.run(["qemu-img", *args])


def lima2_instance(home: Path, *, fmt: str = "qcow2", iso: bool = False,
                   name: str = "vm") -> Path:
    inst = home / name
    inst.mkdir()
    (inst / paths.LIMA_YAML).write_text(LIMA_YAML)
    (inst / paths.LIMA_VERSION).write_text("2.2.0")
    qemu_img("create", "-f", fmt, inst / "disk", str(64 * MiB))
    if iso:
        # An ISO 9660 volume descriptor ("CD001" at 0x8001) is all `iso` needs to be one.
        (inst / "iso").write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4090)
    for entry in BOOT_FILES:
        (inst / entry).write_bytes(b"lima's")
    return inst


def tree(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def desired_for(inst: Path) -> DesiredState:
    resolved = schemas.resolve(str(inst / paths.LIMA_YAML), name=inst.name)
    return DesiredState(resolved.spec, schemas.generation(resolved.filled), RunState.RUNNING,
                        document=None)


def argv(inst: Path) -> list[str]:
    spec = desired_for(inst).spec
    assert spec is not None
    return qemu_argv(spec, inst, ssh_port=60022, accel="tcg", binary=["qemu-system-x86_64"],
                     host=HostFiles(uefi_code=Path("/usr/share/OVMF/OVMF_CODE.fd")))


def drives(args: list[str]) -> list[str]:
    """The -drive values naming a file in the instance directory, boot disk first."""
    found = [args[i + 1] for i, a in enumerate(args) if a == "-drive"]
    files = [d for d in found if d.startswith("file=")]
    return sorted(files, key=lambda d: "media=cdrom" in d)


def test_listed_stopped_and_its_lima_yaml_validates(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = lima2_instance(_isolated_home)
    before = tree(inst)
    code, out, err = run_cli(["list", "--format", "json"], capsys)
    assert code == 0, err
    rec = json.loads(out.splitlines()[0])
    assert (rec["name"], rec["status"]) == ("vm", "Stopped")
    assert not rec.get("errors")
    code, _, err = run_cli(["validate", str(inst / paths.LIMA_YAML)], capsys)
    assert code == 0, err
    assert tree(inst) == before


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_create_step_prepares_no_disk_and_qemu_boots_limas(
    _isolated_home: Path, fmt: str
) -> None:
    inst = lima2_instance(_isolated_home, fmt=fmt)
    before = tree(inst)
    out = QemuDriver().execute("vm", CreateInstance(), desired_for(inst))
    assert out.ok, out.error
    assert tree(inst) == before  # no basedisk, diffdisk or download beside Lima's disk
    assert QemuDriver().observe("vm").disks_ready
    check_instance_disks(inst)
    disks = drives(argv(inst))
    assert disks[0] == f"file={inst / 'disk'},format={fmt},if=virtio,discard=on"
    assert not [d for d in disks if "basedisk" in d or "diffdisk" in d]


def test_lima_iso_is_the_cd_it_boots(_isolated_home: Path) -> None:
    inst = lima2_instance(_isolated_home, iso=True)
    args = argv(inst)
    assert f"file={inst / 'iso'},format=raw,media=cdrom,readonly=on" in drives(args)
    assert args[args.index("-boot") + 1].startswith("order=d")
    assert drives(args)[0].startswith(f"file={inst / 'disk'},format=qcow2")


def test_disk_grows_in_its_own_format(_isolated_home: Path) -> None:
    inst = lima2_instance(_isolated_home, fmt="raw")
    assert grow_diffdisk(inst, 96 * MiB)
    info = qemu_img_info(inst / "disk")
    assert (info["format"], info["virtual-size"]) == ("raw", 96 * MiB)
    assert not (inst / paths.DIFFDISK).exists()


def test_migrated_layout_boots_the_legacy_overlay(_isolated_home: Path) -> None:
    """A limapy (or Lima < 2) instance that Lima 2 started: `disk -> diffdisk`."""
    inst = lima2_instance(_isolated_home)
    (inst / "disk").unlink()
    qemu_img("create", "-f", "raw", inst / paths.BASEDISK, str(32 * MiB))
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", paths.BASEDISK,
             inst / paths.DIFFDISK, str(64 * MiB))
    (inst / "disk").symlink_to(paths.DIFFDISK)
    check_instance_disks(inst)
    assert drives(argv(inst))[0].startswith(f"file={inst / paths.DIFFDISK},format=qcow2")


def test_downloaded_image_becomes_the_disk_as_lima_would(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lima downloaded `image` but made no `disk` yet: it is used, nothing is fetched."""
    inst = lima2_instance(_isolated_home)
    (inst / "disk").rename(inst / "image")
    image_bytes = (inst / "image").read_bytes()
    code, out, err = run_cli(["list", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["status"] == "Stopped", out + err
    out = QemuDriver().execute("vm", CreateInstance(), desired_for(inst))
    assert out.ok, out.error
    assert (inst / "disk").read_bytes() == image_bytes
    assert not (inst / "image").exists()
    assert not (inst / paths.BASEDISK).exists() and not (inst / paths.DIFFDISK).exists()


def test_limas_ssh_pair_is_used_as_it_is(_isolated_home: Path) -> None:
    from lima.drivers.identity import ensure_identity

    key = Ed25519PrivateKey.generate()
    config = _isolated_home / "_config"
    config.mkdir(mode=0o700)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH) + b" lima\n"
    (config / "user").write_bytes(private)
    (config / "user.pub").write_bytes(public)
    identity = ensure_identity()
    assert identity.private_key == config / "user"
    assert identity.public_key == public.decode().strip()
    assert (config / "user").read_bytes() == private


def test_delete_removes_limas_files_and_keeps_a_users(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = lima2_instance(_isolated_home, iso=True)
    (inst / "image").write_bytes(b"a download Lima left")
    (inst / "my-data.qcow2").write_bytes(b"the user's own disk")
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1
    assert "holds entries limactl did not create: my-data.qcow2" in err
    assert sorted(p.name for p in inst.iterdir()) == ["my-data.qcow2"]
    assert (inst / "my-data.qcow2").read_bytes() == b"the user's own disk"


def test_delete_of_a_protected_lima_instance_is_refused(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = lima2_instance(_isolated_home)
    (inst / paths.PROTECTED).write_bytes(b"")
    before = tree(inst)
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1 and "protected" in err
    assert tree(inst) == before


def test_candidates_are_those_of_the_first_variant(_isolated_home: Path) -> None:
    inst = lima2_instance(_isolated_home)
    spec = desired_for(inst).spec
    assert spec is not None
    assert [i.location for i in candidates(spec)] == [
        "https://example.invalid/server-amd64.img"]
    without = replace(spec, images=tuple(replace(i, variant=None) for i in spec.images))
    assert len(candidates(without)) == 2


def test_disk_linked_to_a_file_elsewhere_is_not_booted(
    _isolated_home: Path, tmp_path: Path
) -> None:
    inst = lima2_instance(_isolated_home)
    elsewhere = tmp_path / "someones.qcow2"
    (inst / "disk").rename(elsewhere)
    (inst / "disk").symlink_to(elsewhere)
    with pytest.raises(PermanentError, match="is a symbolic link to"):
        check_instance_disks(inst)
    assert elsewhere.is_file()
