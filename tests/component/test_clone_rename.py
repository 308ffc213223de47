"""`limactl clone` and `limactl rename` through the real CLI entry point, on instances made
by `limactl create` from a local image (real qcow2 disks, no VM): what is copied, what is
made again, the refusals, and that a failed clone leaves no target and the source as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lima.controller import managed
from lima.controller.lock import instance_lock
from lima.drivers import instcopy, store
from tests.component import cli
from tests.component.test_safe_delete import dead_pid
from tests.component.test_safe_delete import tree as full_tree

YAML = ("images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
        "memory: 512MiB\ndisk: 1GiB\nmounts: []\nvmOpts:\n  qemu:\n    restrictNetwork: true\n")
# What a boot leaves in an instance directory (no process alive any more).
BOOT_LEFTOVERS = ("cidata.iso", "cidata.json", "ssh.config", "status.json",
                  "lima.applied.json", "ha.qemu-argv.json", "ha.pid", "qemu.pid",
                  "serial.log", "ha.stdout.log", f".lima.yaml.{os.getpid()}.abcd")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, but the lock files (taking a lock makes one)."""
    return {k: v for k, v in full_tree(root).items() if not k.startswith("_locks")}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    return cli.run_cli(args, capsys)


@pytest.fixture
def src(tmp_path: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Instance `src`, created, then left as a boot leaves it, with a user's file."""
    image = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    f = tmp_path / "src.yaml"
    f.write_text(YAML.format(image=image))
    code, _, err = run_cli(["create", str(f)], capsys)
    assert code == 0, err
    inst = _isolated_home / "src"
    for entry in BOOT_LEFTOVERS:
        (inst / entry).write_text("1\n" if entry.endswith(".pid") else "x")
    (inst / "notes.txt").write_text("mine")
    (inst / "protected").touch()
    return inst


def test_clone_copies_disks_and_config_and_makes_the_rest_again(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(src)
    code, out, err = run_cli(["clone", "src", "dst"], capsys)
    assert code == 0, err
    assert out == ""  # as Lima: nothing on stdout
    dst = _isolated_home / "dst"
    assert sorted(p.name for p in dst.iterdir()) == [
        "basedisk", "basedisk.json", "diffdisk", "ha.stdout.log", "lima-version", "lima.yaml",
        "notes.txt", "serial.log"]
    for name in ("basedisk", "diffdisk", "lima.yaml", "notes.txt"):
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
        # Its own inode: writing one instance's disk never writes the other's.
        assert os.stat(dst / name).st_ino != os.stat(src / name).st_ino, name
    assert not (dst / "protected").exists()  # a clone is unprotected, as in Lima
    assert tree(src) == before  # the source is untouched
    assert instcopy.qcow2_backing_name(dst / "diffdisk") == "basedisk"
    assert not [p for p in _isolated_home.iterdir() if p.name.startswith(".")]

    code, out, _ = run_cli(["list", "--format", "json"], capsys)
    recs = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert recs["dst"]["status"] == "Stopped" and recs["dst"]["dir"] == str(dst)


def test_clone_set_edits_only_the_clone(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (src / "lima.yaml").read_text()
    code, _, err = run_cli(["clone", "--set", ".cpus = 2", "--set", ".memory = \"1GiB\"",
                            "src", "dst"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["list", "--format", "json", "dst"], capsys)
    rec = json.loads(out)
    assert rec["cpus"] == 2 and rec["memory"] == 1024**3
    assert (src / "lima.yaml").read_text() == original


@pytest.mark.parametrize("verb", ["clone", "rename"])
def test_lima_edit_flags_on_clone_and_rename(
    verb: str, src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli([verb, "--cpus", "3", "--memory", "1.5", "--video=false",
                            "--set", ".disk = \"3GiB\"", "src", "dst"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["list", "--format", "json", "dst"], capsys)
    rec = json.loads(out)
    assert (rec["cpus"], rec["memory"], rec["disk"]) == (3, 1.5 * 1024**3, 3 * 1024**3)
    code, _, err = run_cli([verb, "--cpus", "x", "dst", "dst2"], capsys)
    assert code == 1 and 'invalid argument "x" for "--cpus" flag' in err
    assert not (_isolated_home / "dst2").exists()


def test_clone_with_an_invalid_edit_makes_nothing(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(_isolated_home)
    code, _, err = run_cli(["clone", "--set", ".cpus = -1", "src", "dst"], capsys)
    assert code == 1
    assert f"{_isolated_home / 'dst' / 'lima.yaml'} (after --set):" in err and "cpus" in err
    code2, _, err2 = run_cli(["clone", "--set", ".cpus = ", "src", "dst"], capsys)
    assert code2 == 1 and "yq expression" in err2
    assert tree(_isolated_home) == before


@pytest.mark.parametrize(("args", "message"), [
    (["src", "src"], "new instance name `src` must be different from `src`"),
    (["nope", "dst"], "instance `nope` not found"),
    (["src", "../x"], "invalid instance name '../x'"),
    (["src", "other"], "instance `other` already exists"),
])
def test_clone_and_rename_refusals(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    (_isolated_home / "other").mkdir()
    before = tree(_isolated_home)
    for verb in ("clone", "rename"):
        code, _, err = run_cli([verb, *args], capsys)
        assert code == 1 and message in err, err
        assert tree(_isolated_home) == before


def test_running_source_is_refused(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def running(name: str, inst_dir: Path) -> store.Inspection:
        return store.Inspection(name=name, dir=inst_dir, status=store.STATUS_RUNNING)

    monkeypatch.setattr(store, "inspect_processes", running)
    before = tree(_isolated_home)
    for verb in ("clone", "rename"):
        code, _, err = run_cli([verb, "src", "dst"], capsys)
        assert code == 1 and f"cannot {verb} a running instance" in err
    assert tree(_isolated_home) == before


def test_clone_failing_mid_copy_leaves_no_target(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = instcopy.clone_file
    copied: list[str] = []

    def fail_on_diffdisk(source: Path, target: Path) -> None:
        if source.name == "diffdisk":
            raise OSError(28, "No space left on device", str(target))
        real(source, target)
        copied.append(source.name)

    monkeypatch.setattr(instcopy, "clone_file", fail_on_diffdisk)
    before = tree(_isolated_home)
    code, _, err = run_cli(["clone", "src", "dst"], capsys)
    assert code == 1 and "No space left on device" in err and "nothing was made" in err
    assert "basedisk" in copied  # it failed mid-copy, after a disk was copied
    assert tree(_isolated_home) == before  # no target, no work directory, source as it was


def test_killed_clone_is_removed_by_the_next_lock_holder(_isolated_home: Path) -> None:
    work = _isolated_home / f".cloning-dst@{dead_pid()}-abcd"
    work.mkdir()
    (work / "diffdisk").write_bytes(b"half a copy")
    (work / "notes.txt").write_text("a copy of a user's file")
    with instance_lock("dst"):
        pass
    assert not work.exists()


def test_clone_points_an_absolute_backing_file_at_its_own_basedisk(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An overlay naming the source's basedisk by its full path would read the source's
    disk; the clone's is rewritten to its own `basedisk`."""
    diff = src / "diffdisk"
    diff.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(src / "basedisk"), str(diff), "1G"], check=True)
    code, _, err = run_cli(["clone", "src", "dst"], capsys)
    assert code == 0, err
    assert instcopy.qcow2_backing_name(diff) == str(src / "basedisk")
    assert instcopy.qcow2_backing_name(_isolated_home / "dst" / "diffdisk") == "basedisk"


def test_clone_keeps_lima2_links_inside_the_clone(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (src / "disk").symlink_to("diffdisk")  # Lima 2's link to a legacy disk
    code, _, err = run_cli(["clone", "src", "dst"], capsys)
    assert code == 0, err
    assert os.readlink(_isolated_home / "dst" / "disk") == "diffdisk"


def test_rename_moves_the_instance(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = (src / "diffdisk").read_bytes()
    ino = os.stat(src / "diffdisk").st_ino
    code, out, err = run_cli(["rename", "src", "dst"], capsys)
    assert code == 0, err
    assert out == ""
    dst = _isolated_home / "dst"
    assert not src.exists()
    assert (dst / "diffdisk").read_bytes() == disk and os.stat(dst / "diffdisk").st_ino == ino
    names = {p.name for p in dst.iterdir()}
    assert {"lima.yaml", "basedisk", "diffdisk", "notes.txt", "protected",
            "serial.log"} <= names
    assert not names & {"cidata.iso", "cidata.json", "ssh.config", "status.json", "ha.pid",
                        "qemu.pid", "lima.applied.json"}
    code, out, _ = run_cli(["list", "--format", "json"], capsys)
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["dst"]


def test_rename_with_set(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["rename", "--set", ".cpus = 3", "src", "dst"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["list", "--format", "json", "dst"], capsys)
    assert json.loads(out)["cpus"] == 3


def test_rename_of_a_managed_instance_is_refused(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with instance_lock("src"):
        managed.set_ownership("src", managed.Ownership("controller:/f", "/f/src.yaml", ""))
    managed.pause("src")  # paused or not: the controller would make `src` again
    before = tree(src)
    code, _, err = run_cli(["rename", "src", "dst"], capsys)
    assert code == 1 and "managed by controller:/f" in err
    assert tree(src) == before and not (_isolated_home / "dst").exists()
    code, _, err = run_cli(["clone", "src", "dst"], capsys)  # a copy undoes nothing
    assert code == 0, err


@pytest.mark.parametrize(("terminal", "answer", "started"), [
    (True, True, ["dst"]), (True, False, []), (False, True, []),
])
def test_without_start_flag_a_terminal_is_asked_as_lima_asks(
    src: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    terminal: bool, answer: bool, started: list[str],
) -> None:
    from lima.commands import restart

    asked: list[str] = []
    calls: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: terminal, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal, raising=False)
    monkeypatch.setattr(click, "confirm",
                        lambda text, **_: asked.append(text) or answer)
    monkeypatch.setattr(restart, "start_existing", lambda name, timeout=0: calls.append(name))
    code, _, err = run_cli(["clone", "src", "dst"], capsys)
    assert code == 0, err
    assert asked == (["Do you want to start the instance now?"] if terminal else [])
    assert calls == started
    code, _, err = run_cli(["clone", "--start", "src", "dst2"], capsys)
    assert code == 0 and calls == [*started, "dst2"]  # --start never asks
    assert len(asked) == (1 if terminal else 0)


def test_a_damaged_source_or_a_controller_owned_target_is_refused(
    src: Path, _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with instance_lock("dst"):
        managed.set_ownership("dst", managed.Ownership("controller:/f", "/f/dst.yaml", ""))
    for verb in ("clone", "rename"):
        code, _, err = run_cli([verb, "src", "dst"], capsys)
        assert code == 1 and "instance `dst` is managed by controller:/f" in err
    (src / "lima.yaml").write_text("cpus: -1\n")
    before = tree(_isolated_home)
    for verb in ("clone", "rename"):
        code, _, err = run_cli([verb, "src", "other"], capsys)
        assert code == 1 and f"{src / 'lima.yaml'}:1: cpus" in err, err
    assert tree(_isolated_home) == before
