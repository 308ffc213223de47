"""lima.drivers.snapshots' running-instance side (HMP over QMP) against an in-process fake
QEMU that answers as QEMU 7.2 does, errors included; and the pure tag helpers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lima.commands.snapshot import check_new_tag
from lima.drivers import snapshots
from lima.errors import LimaError
from tests.unit.test_qmp_client import FakeQMP


class FakeQemu:
    """What the HMP snapshot commands do to a VM, as far as the driver can see."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        self.status = "running"
        self.tags: dict[str, int] = {}
        self.fail_load = ""  # an error loadvm reports after stopping the VM
        self.hmp: list[str] = []

    def answer(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        cmd, mid = msg["execute"], msg.get("id")
        ret: Any = {}
        if cmd == "query-status":
            ret = {"status": self.status, "running": self.status == "running"}
        elif cmd == "query-block":
            snaps = [{"id": str(i + 1), "name": t, "vm-state-size": s}
                     for i, (t, s) in enumerate(self.tags.items())]
            ret = [{"device": "", "inserted": {"file": "/elsewhere/cidata.iso", "image": {}}},
                   {"device": "", "inserted": {"file": str(self.disk),
                                               "image": {"snapshots": snaps}}}]
        elif cmd == "human-monitor-command":
            line = msg["arguments"]["command-line"]
            self.hmp.append(line)
            ret = self._hmp(line)
        return [{"return": ret, "id": mid}]

    def _hmp(self, line: str) -> str:
        verb, _, arg = line.partition(" ")
        tag = arg[1:-1].replace('\\"', '"') if arg.startswith('"') else arg
        if verb == "savevm":
            if tag == "full":
                return "Error: Device 'virtio1' is writable but does not support snapshots\r\n"
            self.tags[tag] = 1 << 20
        elif verb == "loadvm":
            self.status = "restore-vm"  # QEMU stops the VM first ...
            if self.fail_load:
                return f"Error: {self.fail_load}\r\n"  # ... and leaves it so on failure
            self.status = "running"
        elif verb == "delvm":
            self.tags.pop(tag, None)
        elif line == "info snapshots":
            if not self.tags:
                return "There is no snapshot available.\r\n"
            rows = "".join(f"--        {t:<17} 1 MiB 2026-11-30 14:10:32 00:00:07.942\r\n"
                           for t in self.tags)
            return ("List of snapshots present on all disks:\r\n"
                    "ID        TAG               VM SIZE                DATE     VM CLOCK     "
                    "ICOUNT\r\n" + rows)
        return ""


@pytest.fixture
def inst_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="snapt-", dir="/tmp"))  # short: sun_path limit
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def qemu(inst_dir: Path) -> Iterator[FakeQemu]:
    fake = FakeQemu(inst_dir / "diffdisk")
    srv = FakeQMP(inst_dir / "qmp.sock", fake.answer)
    try:
        yield fake
    finally:
        srv.close()


def test_create_list_apply_delete_through_hmp(inst_dir: Path, qemu: FakeQemu) -> None:
    online = snapshots.Online(inst_dir)
    assert online.table() == ""
    online.create("s1")
    assert [s.tag for s in online.snapshots()] == ["s1"]
    table = online.table()
    assert table.startswith("ID        TAG ") and "\r" not in table
    assert "List of snapshots" not in table and table.splitlines()[1].split()[1] == "s1"
    online.apply("s1")
    online.delete("s1")
    assert qemu.hmp == ["info snapshots", "savevm s1", "info snapshots", "loadvm s1",
                        "delvm s1"]
    assert online.snapshots() == []


def test_hmp_errors_are_failures_in_qemus_words(inst_dir: Path, qemu: FakeQemu) -> None:
    with pytest.raises(snapshots.SnapshotError, match=r"^Device 'virtio1' is writable but"):
        snapshots.Online(inst_dir).create("full")


def test_a_failed_loadvm_says_the_guest_is_left_paused(inst_dir: Path, qemu: FakeQemu) -> None:
    qemu.tags["s1"] = 1
    qemu.fail_load = "Length mismatch: pc.ram: 0x10000000 in != 0x20000000"
    with pytest.raises(snapshots.SnapshotError) as info:
        snapshots.Online(inst_dir).apply("s1")
    assert "Length mismatch" in str(info.value)
    assert "left paused (restore-vm)" in str(info.value)
    assert "limactl stop -f" in str(info.value)


def test_snapshots_are_read_from_the_boot_disk_drive(inst_dir: Path, qemu: FakeQemu) -> None:
    qemu.tags.update({"a": 0, "b": 5})
    assert snapshots.Online(inst_dir).snapshots() == [
        snapshots.Snapshot("1", "a", 0), snapshots.Snapshot("2", "b", 5)]


def test_tags_with_spaces_are_quoted_for_hmp(inst_dir: Path, qemu: FakeQemu) -> None:
    snapshots.Online(inst_dir).delete('made "by" hand')
    assert qemu.hmp == ['delvm "made \\"by\\" hand"']
    assert snapshots.hmp_quote("plain-1.0") == "plain-1.0"
    assert snapshots.hmp_quote("a\\b") == '"a\\\\b"'
    assert snapshots.hmp_quote("") == '""'


@pytest.mark.parametrize("tag", ["a b", "x\ty", "12", "bell\x07"])
def test_new_tag_rules_refuse(tag: str) -> None:
    with pytest.raises(LimaError):
        check_new_tag(tag)


@pytest.mark.parametrize("tag", ["s1", "v1.0", "before-upgrade", "1a", "été"])
def test_new_tag_rules_accept(tag: str) -> None:
    check_new_tag(tag)
