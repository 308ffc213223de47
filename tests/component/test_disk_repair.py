"""Disks that go missing from a created instance, through the real driver's CreateInstance
step (real qemu-img, no VM): made again when nothing is lost, else a permanent error that
names the files and says what to do; never a silent blank disk."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from lima import paths, schemas
from lima.drivers.images.baserecord import read_record
from lima.drivers.instance import QemuDriver
from lima.states.actions import CreateInstance, Outcome
from lima.states.model import DesiredState, RunState


def image_bytes(seed: bytes) -> bytes:
    # A raw disk image: 1 MiB whose content depends on `seed`.
    block = hashlib.sha256(seed).digest() * 32  # 1 KiB
    return block * 1024


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "base.img"
    p.write_bytes(image_bytes(b"one"))
    return p


@pytest.fixture
def desired(tmp_path: Path, image: Path) -> DesiredState:
    doc = tmp_path / "vm.yaml"
    doc.write_text(f"images:\n- location: {image}\n  arch: x86_64\n")
    resolved = schemas.resolve(str(doc), name="vm")
    return DesiredState(resolved.spec, schemas.generation(resolved.filled), RunState.RUNNING)


@pytest.fixture
def inst(desired: DesiredState, _isolated_home: Path) -> Path:
    """A created instance (lima.yaml, basedisk, diffdisk, basedisk.json)."""
    out = create(desired)
    assert out.ok, out.error
    return _isolated_home / "vm"


def create(desired: DesiredState) -> Outcome:
    from dataclasses import replace

    return QemuDriver().execute("vm", CreateInstance(), replace(desired, document="images: []\n"))


def test_create_records_the_basedisk_diffdisk_is_laid_over(inst: Path, image: Path) -> None:
    data = json.loads((inst / paths.BASEDISK_RECORD).read_text())
    assert data == {"version": 1, "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                    "size": image.stat().st_size}
    assert paths.is_known_instance_entry(paths.BASEDISK_RECORD)  # `delete` removes it


def test_lost_basedisk_is_prepared_again_from_the_same_bytes(
    inst: Path, desired: DesiredState, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    diff_before = (inst / paths.DIFFDISK).read_bytes()
    (inst / paths.BASEDISK).unlink()
    with caplog.at_level(logging.WARNING):
        out = create(desired)
    assert out.ok, out.error
    assert (inst / paths.BASEDISK).read_bytes() == image.read_bytes()
    assert (inst / paths.DIFFDISK).read_bytes() == diff_before  # the data is untouched
    assert f"{inst / paths.BASEDISK} was missing; prepared it again from {image}" in caplog.text
    assert not [p.name for p in inst.iterdir() if p.name.endswith(".tmp")]


def test_lost_basedisk_with_other_bytes_now_is_refused(
    inst: Path, desired: DesiredState, image: Path
) -> None:
    (inst / paths.BASEDISK).unlink()
    image.write_bytes(image_bytes(b"two"))  # the image file was replaced since the create
    out = create(desired)
    assert not out.ok and out.permanent
    assert out.error is not None
    assert out.error.startswith(
        f"{inst / paths.BASEDISK} is missing, and {inst / paths.DIFFDISK} (the instance's"
        " data) is laid over the basedisk it was created on (sha256 ")
    assert f"  - {image}: different bytes (sha256 " in out.error
    assert "Put the original basedisk back" in out.error and "limactl delete vm" in out.error
    assert not (inst / paths.BASEDISK).exists()
    assert not [p.name for p in inst.iterdir() if p.name.endswith(".tmp")]


def test_lost_basedisk_without_a_record_is_refused(
    inst: Path, desired: DesiredState
) -> None:
    (inst / paths.BASEDISK).unlink()
    (inst / paths.BASEDISK_RECORD).write_text("{damaged")
    assert read_record(inst) is None
    out = create(desired)
    assert not out.ok and out.permanent
    assert out.error is not None and f"There is no {paths.BASEDISK_RECORD}" in out.error
    assert not (inst / paths.BASEDISK).exists()


@pytest.mark.parametrize("trace", [paths.CIDATA_META, paths.CIDATA_ISO, paths.HA_STDOUT,
                                   paths.SERIAL_LOG])
def test_lost_diffdisk_of_a_booted_instance_is_data_lost(
    inst: Path, desired: DesiredState, trace: str
) -> None:
    (inst / trace).write_text("{}")  # what any boot leaves
    (inst / paths.DIFFDISK).unlink()
    for _ in range(2):  # and again: it is never made silently on a retry either
        out = create(desired)
        assert not out.ok and out.permanent
        assert out.error is not None
        assert out.error.startswith(f"{inst / paths.DIFFDISK} is missing: the disk of instance"
                                    " 'vm', which holds everything its guest wrote")
        assert "`limactl delete vm`" in out.error
        assert not (inst / paths.DIFFDISK).exists()


def test_lost_disks_of_a_never_booted_instance_are_made_again(
    inst: Path, desired: DesiredState, image: Path
) -> None:
    (inst / paths.DIFFDISK).unlink()
    (inst / paths.BASEDISK).unlink()
    out = create(desired)
    assert out.ok, out.error
    assert (inst / paths.BASEDISK).read_bytes() == image.read_bytes()
    assert (inst / paths.DIFFDISK).is_file()


def test_a_directory_without_lima_yaml_is_not_retried(
    desired: DesiredState, _isolated_home: Path
) -> None:
    d = _isolated_home / "vm"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    out = create(desired)
    assert not out.ok and out.permanent
    assert out.error == (f"{d} exists but holds no lima.yaml file, so it is no instance limactl"
                         " can use; look inside, move it away, then apply again")
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_list_calls_a_booted_instance_without_its_diffdisk_broken(inst: Path) -> None:
    from lima.drivers import store

    (inst / paths.CIDATA_META).write_text("{}")
    assert store.inspect_processes("vm", inst).status == store.STATUS_STOPPED
    (inst / paths.DIFFDISK).unlink()
    ins = store.inspect_processes("vm", inst)
    assert ins.status == store.STATUS_BROKEN
    assert any("is gone" in e for e in ins.errors)
