"""What an instance directory may hold (the table delete trusts), the names of create and
delete work directories, and which LIMA_HOME entries count as instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima import paths
from lima.errors import SpecError
from lima.names import instance_dir_for, is_valid_name


@pytest.mark.parametrize("entry", [
    "lima.yaml", "lima-version", "basedisk", "diffdisk", "cidata.iso", "cidata.json",
    "status.json", "qemu.stdout.log", "qemu.stderr.log", "ha.qemu-argv.json", "ha.pid",
    "ha.sock", "qmp.sock", "serial.log", "serialp.log", "serialv.log", "serialv.sock",
    "disk", "iso", "kernel", "kernel.cmdline", "initrd", "protected", "ssh.config",
    "ssh.sock.a1b2c3d4e5f6", "ansible-inventory.yaml", "cloud-config.yaml",
    ".status.k2j3h4g5.tmp", ".lima.yaml.1234.abcd", ".cidata.iso.tmp.99", ".diffdisk.tmp",
    ".ha.pid.77.tmp", "foo.pid", "bar.sock",
])
def test_known_entries(entry: str) -> None:
    assert paths.is_known_instance_entry(entry)


@pytest.mark.parametrize("entry", [
    "my-disk.img", "notes.txt", "data", ".bashrc", "lima.yaml~", "basedisk.bak",
    "status.json.orig", ".git", "serial", "ssh.sock2", ".status.tmp", "Lima.yaml",
])
def test_unknown_entries_are_not_ours(entry: str) -> None:
    assert not paths.is_known_instance_entry(entry)


def test_work_dir_names_round_trip() -> None:
    for name in ("a", "a-1", "my.vm_2", "x-123"):
        entry = paths.work_dir_name("creating", name, 4321, "abc-9")
        assert paths.parse_work_dir(entry) == ("creating", name, 4321)
        assert paths.parse_work_dir(paths.work_dir_name("deleting", name, 7, "z")) == \
            ("deleting", name, 7)
    # The old unparseable form (no PID) and other hidden entries are not work directories.
    assert paths.parse_work_dir(".creating-a-1-xyz") is None
    assert paths.parse_work_dir(".hidden") is None


def test_only_valid_names_are_instances(_isolated_home: Path) -> None:
    for entry in ("vm", "_config", ".creating-vm@1-x", "my vm", "é", "vm.2"):
        (_isolated_home / entry).mkdir()
    listed = sorted(p.name for p in _isolated_home.iterdir() if paths.is_instance_dir(p))
    assert listed == ["vm", "vm.2"]


@pytest.mark.parametrize("name", [".", "..", "", "/etc", "a/b", "../x", "-x", "_config",
                                  ".hidden", "é", "vm\n", "x" * 300])
def test_instance_dir_refuses_odd_names(name: str) -> None:
    assert not is_valid_name(name) or len(name) > 100
    with pytest.raises(SpecError, match="instance name"):
        instance_dir_for(name)
    with pytest.raises(SpecError, match="instance name"):
        paths.instance_dir(name)


def test_instance_dir_of_a_valid_name(_isolated_home: Path) -> None:
    assert paths.instance_dir("vm-1") == _isolated_home / "vm-1"


LIMA = Path(__file__).resolve().parents[2] / "lima"


def test_every_file_name_in_paths_is_in_the_table() -> None:
    """A file added to lima.paths but not to the table would make delete keep the
    instance directory ("entries limactl did not create")."""
    not_instance_files = {"CONFIG", "LOCKS", "SOCK_DIR"}  # SOCK_DIR: a directory, see store
    names = {k: v for k, v in vars(paths).items()
             if k.isupper() and isinstance(v, str) and k not in not_instance_files}
    assert names  # the scan sees the constants
    assert [k for k, v in names.items() if not paths.is_known_instance_entry(v)] == []


def test_every_literal_written_into_an_instance_dir_is_in_the_table() -> None:
    """`inst_dir / "name"` anywhere in lima/: the name must be one delete knows."""
    import ast

    unknown = []
    for src in sorted(LIMA.rglob("*.py")):
        text = src.read_text()
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                    and isinstance(node.right, ast.Constant)
                    and isinstance(node.right.value, str)
                    and "inst" in (ast.get_source_segment(text, node.left) or "")
                    and not paths.is_known_instance_entry(node.right.value)):
                unknown.append(f"{src.relative_to(LIMA.parent)}:{node.lineno} "
                               f"{node.right.value}")
    assert unknown == []
