"""lima.drivers.snapshotshape: which options of qemu's argv make a snapshot's VM shape,
how a recorded shape is compared with the running VM's, and the per-tag record file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lima.drivers import snapshotshape

pytestmark = pytest.mark.unit

INST = Path("/home/u/.lima/t")


def argv(cpus: int = 1, memory: int = 1024, port: int = 60022) -> list[str]:
    return ["/usr/bin/qemu-system-x86_64", "-name", "lima-t", "-machine", "q35",
            "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", f"{cpus},sockets=1",
            "-m", str(memory), "-pidfile", f"{INST}/qemu.pid",
            "-drive", f"file={INST}/diffdisk,format=qcow2,if=virtio",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0", "-qmp", "chardev:char-qmp"]


def record(args: list[str], version: str = "7.2.0", ident: Any = None) -> dict[str, Any]:
    return {"version": 1, "qemuBinary": args[0], "qemuVersion": version,
            "qemuBinaryIdentity": ident or {"ino": 1}, "shape": snapshotshape.shape(args, INST)}


def test_shape_keeps_the_machine_and_drops_what_loadvm_ignores() -> None:
    s = snapshotshape.shape(argv(), INST)
    assert "-smp 1,sockets=1" in s and "-m 1024" in s and "-machine q35" in s
    assert "-drive file={{.Dir}}/diffdisk,format=qcow2,if=virtio" in s
    assert not any(o.startswith(("-netdev", "-pidfile", "-qmp", "-name")) for o in s)
    # The instance directory is relative: a renamed instance matches its snapshots.
    moved = [a.replace(str(INST), "/elsewhere/t2") for a in argv()]
    assert snapshotshape.shape(moved, Path("/elsewhere/t2")) == s


def test_the_same_vm_matches_even_with_another_ssh_port() -> None:
    assert snapshotshape.difference(record(argv()), record(argv(port=60100))) == ""


@pytest.mark.parametrize("changed, said", [
    (argv(cpus=2), "`-smp 2,sockets=1`"),
    (argv(memory=2048), "`-m 2048`"),
])
def test_a_changed_machine_is_named(changed: list[str], said: str) -> None:
    why = snapshotshape.difference(record(argv()), record(changed))
    assert "shape changed" in why and said in why and "then" in why


def test_another_qemu_version_or_binary() -> None:
    assert "QEMU 7.2.0" in snapshotshape.difference(record(argv()),
                                                    record(argv(), version="8.0.0"))
    other = snapshotshape.difference(record(argv()), record(argv(), ident={"ino": 2}))
    assert "another QEMU binary" in other


def test_records_per_tag_are_written_and_removed(tmp_path: Path) -> None:
    rec = record(argv())
    assert snapshotshape.read(tmp_path, "a b") is None
    snapshotshape.write(tmp_path, "a b", rec)
    snapshotshape.write(tmp_path, "c", rec)
    assert snapshotshape.read(tmp_path, "a b") == rec
    snapshotshape.write(tmp_path, "a b", None)
    assert snapshotshape.read(tmp_path, "a b") is None and snapshotshape.read(tmp_path, "c")
    snapshotshape.write(tmp_path, "c", None)
    assert not (tmp_path / "snapshots.json").exists()
    snapshotshape.write(tmp_path, "gone", None)  # nothing to remove: no file made
    assert not (tmp_path / "snapshots.json").exists()


def test_a_record_of_another_version_is_ignored(tmp_path: Path) -> None:
    snapshotshape.write(tmp_path, "t", {**record(argv()), "version": 99})
    assert snapshotshape.read(tmp_path, "t") is None
    (tmp_path / "snapshots.json").write_text("not json")
    assert snapshotshape.read(tmp_path, "t") is None
