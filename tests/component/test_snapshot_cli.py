"""`limactl snapshot` through the real CLI entry point on a stopped instance made with
`limactl create` from a local qcow2 (no guest: qemu-img works on its diffdisk): messages,
exit codes, aliases, tag rules, the lock, and the controller refusal."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from lima.controller import managed
from tests.component.cli import run_cli
from tests.component.test_cli_instances import write_yaml

EXPERIMENTAL = "`limactl snapshot` is experimental"


@pytest.fixture
def inst(tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> Path:
    img = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    code, _, err = run_cli(["create", str(write_yaml(tmp_path, img))], capsys)
    assert code == 0, err
    return _isolated_home / "vm"


def qemu_snapshots(disk: Path) -> list[tuple[str, int]]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     check=True, capture_output=True, text=True).stdout)
    return [(s["name"], s["vm-state-size"]) for s in info.get("snapshots", [])]


def virtual_size(disk: Path) -> int:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     check=True, capture_output=True, text=True).stdout)
    return int(info["virtual-size"])


def test_create_list_apply_delete_on_the_stopped_disk(
    inst: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    disk = inst / "diffdisk"
    code, out, _ = run_cli(["snapshot", "list", "vm"], capsys)
    assert (code, out) == (0, "")
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == \
        [EXPERIMENTAL]

    code, out, err = run_cli(["snapshot", "create", "vm", "--tag", "s1"], capsys)
    assert (code, out) == (0, ""), err
    assert qemu_snapshots(disk) == [("s1", 0)]  # in the overlay, disk only
    code, _, err = run_cli(["snapshot", "save", "vm", "--tag", "s2"], capsys)
    assert code == 0, err

    code, out, _ = run_cli(["snapshot", "list", "vm"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TAG", "VM", "SIZE", "DATE", "VM", "CLOCK", "ICOUNT"]
    assert [ln.split()[1] for ln in lines[1:]] == ["s1", "s2"]
    assert "Snapshot list:" not in out
    for quiet in (["list", "-q"], ["ls", "--quiet"]):
        code, out, _ = run_cli(["snapshot", *quiet, "vm"], capsys)
        assert (code, out) == (0, "s1\ns2\n")

    # apply reverts the disk: a grow after s1 is undone (qcow2 snapshots keep the size).
    size = virtual_size(disk)
    subprocess.run(["qemu-img", "resize", "-q", str(disk), str(size * 2)], check=True)
    code, _, err = run_cli(["snapshot", "apply", "vm", "--tag", "s1"], capsys)
    assert code == 0, err
    assert virtual_size(disk) == size
    code, _, err = run_cli(["snapshot", "load", "vm", "--tag", "s2"], capsys)
    assert code == 0, err

    code, _, err = run_cli(["snapshot", "delete", "vm", "--tag", "s1"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["snapshot", "del", "vm", "--tag", "s2"], capsys)
    assert code == 0, err
    assert qemu_snapshots(disk) == []


@pytest.mark.parametrize("verb", ["create", "apply", "delete"])
def test_tag_is_required(inst: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    code, out, err = run_cli(["snapshot", verb, "vm"], capsys)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].endswith("expected tag")


@pytest.mark.parametrize("verb", ["create", "apply", "delete", "list"])
def test_instance_is_required_and_must_exist(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    code, _, err = run_cli(["snapshot", verb, "--tag", "t"] if verb != "list"
                           else ["snapshot", verb], capsys)
    assert code == 1 and "requires at least 1 arg(s), only received 0" in err
    args = ["snapshot", verb, "nope"] + (["--tag", "t"] if verb != "list" else [])
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "instance 'nope' does not exist" in err


def test_new_tags_follow_the_rules(inst: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad, words in (("a b", "one word"), ("7", "a number"), ("tab\there", "one word")):
        code, _, err = run_cli(["snapshot", "create", "vm", "--tag", bad], capsys)
        assert code == 1 and words in err, (bad, err)
    assert qemu_snapshots(inst / "diffdisk") == []
    assert run_cli(["snapshot", "create", "vm", "--tag", "v1.0_x-y"], capsys)[0] == 0
    code, _, err = run_cli(["snapshot", "create", "vm", "--tag", "v1.0_x-y"], capsys)
    assert code == 1 and "snapshot 'v1.0_x-y' already exists in instance 'vm'" in err
    assert qemu_snapshots(inst / "diffdisk") == [("v1.0_x-y", 0)]  # no second one


@pytest.mark.parametrize("verb", ["apply", "delete"])
def test_missing_tag_is_refused(inst: Path, capsys: pytest.CaptureFixture[str],
                                verb: str) -> None:
    code, _, err = run_cli(["snapshot", verb, "vm", "--tag", "ghost"], capsys)
    assert code == 1
    assert "snapshot 'ghost' not found in instance 'vm'" in err
    assert "limactl snapshot list vm" in err


def test_a_tag_qemu_img_made_with_a_space_is_listed_applied_and_deleted(
    inst: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = inst / "diffdisk"
    subprocess.run(["qemu-img", "snapshot", "-c", "made by hand", str(disk)], check=True)
    code, out, _ = run_cli(["snapshot", "list", "-q", "vm"], capsys)
    assert (code, out) == (0, "made by hand\n")  # whole (Lima's -q would print "made")
    assert run_cli(["snapshot", "apply", "vm", "--tag", "made by hand"], capsys)[0] == 0
    assert run_cli(["snapshot", "delete", "vm", "--tag", "made by hand"], capsys)[0] == 0
    assert qemu_snapshots(disk) == []


def test_a_raw_lima2_disk_is_refused_in_words(
    inst: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A directory laid out by Lima 2 with a raw `disk`: QEMU keeps no snapshot in it.
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(inst / "disk"), "1M"],
                   check=True)
    code, _, err = run_cli(["snapshot", "create", "vm", "--tag", "s"], capsys)
    assert code == 1 and "is a raw disk: QEMU keeps snapshots inside qcow2 disks only" in err


def test_create_waits_for_the_lock_and_names_the_holder(
    inst: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lima.controller.lock import instance_lock
    from lima.states import policy

    monkeypatch.setattr(policy, "STEP_BUDGET", 0.2)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with instance_lock("vm", purpose="limactl start vm (a test)"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        code, _, err = run_cli(["snapshot", "create", "vm", "--tag", "s"], capsys)
    finally:
        release.set()
        t.join()
    assert code == 1 and "instance 'vm' is busy" in err and "limactl start vm" in err
    assert qemu_snapshots(inst / "diffdisk") == []
    assert run_cli(["snapshot", "create", "vm", "--tag", "s"], capsys)[0] == 0


def test_apply_refused_on_a_managed_instance_until_paused(
    inst: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_cli(["snapshot", "create", "vm", "--tag", "s"], capsys)[0] == 0
    managed.set_ownership("vm", managed.Ownership(
        managed.owner_label(tmp_path), str(tmp_path / "vm.yaml"), ""))
    code, _, err = run_cli(["snapshot", "apply", "vm", "--tag", "s"], capsys)
    assert code == 1
    assert f"managed by controller:{tmp_path}" in err
    assert "limactl controller pause vm" in err
    # create, list and delete are not refused: the controller has nothing to undo there
    assert run_cli(["snapshot", "create", "vm", "--tag", "t"], capsys)[0] == 0
    managed.pause("vm")
    code, _, err = run_cli(["snapshot", "apply", "vm", "--tag", "s"], capsys)
    assert code == 0, err
