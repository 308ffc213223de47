"""Lima disks without processes: the store and lock (lima.drivers.disks), the `disk list`
table, the qemu drives and the seed's disk variables."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from lima.commands.disk import table
from lima.drivers import cloudconfig, disks
from lima.drivers.qemu import HostFiles, qemu_argv
from lima.errors import NotFoundError, PermanentError, SpecError
from lima.schemas.spec import AdditionalDisk, QemuOptions
from tests.unit.cidata_fixtures import make_spec


def fake_disk(name: str, *, qcow2_size: int | None = None, raw_size: int = 4096) -> Path:
    d = disks.disk_dir(name)
    d.mkdir(parents=True)
    data = d / "datadisk"
    if qcow2_size is not None:
        data.write_bytes(b"QFI\xfb" + b"\0" * 20 + struct.pack(">Q", qcow2_size) + b"\0" * 64)
    else:
        with open(data, "wb") as f:
            f.truncate(raw_size)
    return d


def test_bytes_size_like_go_units() -> None:
    assert [disks.bytes_size(n) for n in (100, 1 << 30, 3 << 29, 64 << 20, 10 << 40)] == [
        "100B", "1GiB", "1.5GiB", "64MiB", "10TiB"]


def test_inspect_reads_format_size_and_holder(_isolated_home: Path) -> None:
    fake_disk("q", qcow2_size=5 << 30)
    fake_disk("r", raw_size=1 << 20)
    assert disks.disk_names() == ["q", "r"]
    q = disks.inspect_disk("q")
    assert (q.format, q.size, q.instance, q.mount_point) == ("qcow2", 5 << 30, "", "/mnt/lima-q")
    os.symlink(_isolated_home / "vm1", disks.disk_dir("r") / "in_use_by")
    r = disks.inspect_disk("r", fs_type="swap")
    assert (r.format, r.size, r.instance, r.mount_point) == ("raw", 1 << 20, "vm1", "[SWAP]")
    assert json.loads(r.json_line()) == {
        "name": "r", "size": 1 << 20, "format": "raw", "dir": str(disks.disk_dir("r")),
        "instance": "vm1", "instanceDir": str(_isolated_home / "vm1"), "mountPoint": "[SWAP]",
        "fsType": "swap"}
    with pytest.raises(NotFoundError):
        disks.inspect_disk("nosuch")
    with pytest.raises(SpecError):
        disks.disk_dir("../etc")


def test_lock_refuses_another_instance_naming_it(_isolated_home: Path) -> None:
    fake_disk("data")
    a, b = _isolated_home / "a", _isolated_home / "b"
    assert disks.attach_for_start(["data"], a) == [(disks.disk_dir("data") / "datadisk", "raw")]
    assert disks.inspect_disk("data").instance == "a"
    disks.attach_for_start(["data"], a)  # the same instance again: fine
    with pytest.raises(PermanentError, match=r"could not attach disk `data`: in use by "
                       r"instance `a` \(it is not running: `limactl disk unlock data`"):
        disks.attach_for_start(["data"], b)
    assert os.readlink(disks.disk_dir("data") / "in_use_by") == str(a)
    assert disks.unlock_instance_disks(b) == []
    assert disks.unlock_instance_disks(a) == ["data"]
    assert disks.inspect_disk("data").instance == ""


def test_attach_is_all_or_nothing(_isolated_home: Path) -> None:
    fake_disk("one")
    fake_disk("two")
    os.symlink(_isolated_home / "other", disks.disk_dir("two") / "in_use_by")
    with pytest.raises(PermanentError, match="in use by instance `other`"):
        disks.attach_for_start(["one", "two"], _isolated_home / "me")
    assert disks.inspect_disk("one").instance == ""
    with pytest.raises(PermanentError, match="could not load disk `gone`: it does not exist"):
        disks.attach_for_start(["one", "gone"], _isolated_home / "me")
    assert disks.inspect_disk("one").instance == ""


def test_table_pads_like_tabwriter() -> None:
    out = table([["NAME", "SIZE", "IN-USE-BY"], ["data", "10GiB", ""], ["x", "1GiB", "vm"]])
    assert out == ("NAME    SIZE     IN-USE-BY\n"
                   "data    10GiB    \n"
                   "x       1GiB     vm\n")


def test_qemu_drives_follow_the_boot_disk_in_order(tmp_path: Path) -> None:
    inst = tmp_path / "vm"
    inst.mkdir()
    (inst / "kernel").write_bytes(b"k")  # direct kernel boot: no firmware needed
    spec = make_spec(qemu=QemuOptions(restrict_network=True))
    argv = qemu_argv(spec, inst, ssh_port=2222, accel="tcg", binary=["qemu-system-x86_64"],
                     host=HostFiles(), data_disks=[(Path("/d/a,b/datadisk"), "qcow2"),
                                                   (Path("/d/c/datadisk"), "raw")])
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[1:3] == ["file=/d/a,,b/datadisk,format=qcow2,if=virtio,discard=on",
                           "file=/d/c/datadisk,format=raw,if=virtio,discard=on"]
    assert drives[0].startswith(f"file={inst / 'diffdisk'},format=qcow2,if=virtio")


def test_seed_names_each_disk_and_its_device() -> None:
    spec = make_spec(additional_disks=(
        AdditionalDisk("data", format=True),
        AdditionalDisk("sw", format=False, fs_type="swap", fs_args=("-c", "-q"))))
    env = dict(line.split("=", 1) for line in
               cloudconfig.lima_env(spec, iid="i").splitlines())
    assert env["LIMA_CIDATA_DISKS"] == "2"
    assert [env[f"LIMA_CIDATA_DISK_0_{k}"] for k in ("NAME", "DEVICE", "FORMAT", "FSTYPE")] == [
        "data", "vdb", "true", ""]
    assert [env[f"LIMA_CIDATA_DISK_1_{k}"] for k in ("NAME", "DEVICE", "FORMAT", "FSTYPE",
                                                     "FSARGS")] == [
        "sw", "vdc", "false", "swap", "'-c -q'"]


def test_fs_type_is_checked_with_file_and_line() -> None:
    from lima.schemas.lines import from_loaded
    from lima.schemas.validate import check
    from lima.schemas.yamlload import load_yaml

    text = ("images:\n- location: build:tiny\n  arch: x86_64\nadditionalDisks:\n- name: a\n"
            "  fsType: xfs\n- name: b\n  fsType: 'ext4;reboot'\n- c\n")
    loaded = load_yaml(text, "d.yaml")
    found = [str(p) for p in check(loaded.data, from_loaded(loaded.lines, "d.yaml"), "d.yaml")]
    assert found == ['d.yaml:8: additionalDisks[1].fsType: invalid file system type '
                     '"ext4;reboot": use a name such as ext4, xfs, btrfs or swap']


def test_disks_live_in_limas_dir_and_an_older_limapys_dir_moves_there(
    _isolated_home: Path,
) -> None:
    """Lima keeps disks in `$LIMA_HOME/_disks` (filenames.DisksDir); limapy once used
    `_disk`: its disks are moved, whole, on first use, never copied or lost."""
    old = _isolated_home / "_disk" / "data"
    old.mkdir(parents=True)
    (old / "datadisk").write_bytes(b"\0" * 4096)
    (old / "datadisk").chmod(0o600)
    assert disks.disk_names() == ["data"]
    assert disks.disk_dir("data") == _isolated_home / "_disks" / "data"
    assert (_isolated_home / "_disks" / "data" / "datadisk").read_bytes() == b"\0" * 4096
    assert not (_isolated_home / "_disk").exists()
    # Both there (a Lima made `_disks` too): the legacy one is left alone, not merged.
    (_isolated_home / "_disk" / "other").mkdir(parents=True)
    assert disks.disk_names() == ["data"]
    assert (_isolated_home / "_disk" / "other").is_dir()
