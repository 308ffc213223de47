"""`limactl apply` on a changed spec, `apply --dry-run` and `limactl diff`, through the real
CLI entry point on a created instance, with the FakeDriver standing in for QEMU.

Checks what each class of change does (restart, stage, live, recreate, reject), that the
plan changes nothing, and that an invalid or refused spec leaves the instance as it was.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lima.controller.clock import FakeClock
from lima.controller.fake import FakeDriver
from lima.drivers.instance import QemuDriver
from lima.states.actions import BuildCidata, StopInstance
from tests.component.cli import run_cli

REAL_DRIVER = QemuDriver  # the `fake` fixture replaces it


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDriver:
    driver = FakeDriver(FakeClock(), ssh_delay=0.0, provision_delay=0.0, stop_delay=0.0)
    monkeypatch.setattr("lima.drivers.instance.QemuDriver", lambda *a, **k: driver)

    def qemu_pid(inst: Path) -> int | None:
        vm = driver.vms.get(inst.name)
        return 4242 if vm is not None and vm.qemu_alive else None

    monkeypatch.setattr("lima.drivers.procs.qemu_pid", qemu_pid)
    return driver


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    return img


def spec_file(tmp_path: Path, image: Path, **over: str) -> Path:
    values = {"cpus": "1", "disk": "1GiB", "message": "''", "arch": "x86_64", **over}
    f = tmp_path / "vm.yaml"
    f.write_text(
        f"images:\n- location: {image}\n  arch: {values['arch']}\n"
        f"arch: {values['arch']}\ncpus: {values['cpus']}\nmemory: 512MiB\n"
        f"disk: {values['disk']}\nmessage: {values['message']}\n"
        "vmOpts:\n  qemu:\n    restrictNetwork: true\n"
    )
    return f


@pytest.fixture
def running(tmp_path: Path, image: Path, fake: FakeDriver, _isolated_home: Path,
            capsys: pytest.CaptureFixture[str]) -> Path:
    """Instance `vm`, created for real (lima.yaml, disks) and running in the fake world."""
    f = spec_file(tmp_path, image)
    with pytest.MonkeyPatch.context() as m:
        # `create` runs CreateInstance through the driver: the real one writes the disks.
        m.setattr("lima.drivers.instance.QemuDriver", REAL_DRIVER)
        code, _, err = run_cli(["create", str(f)], capsys)
    assert code == 0, err
    fake.vm("vm").created = True
    code, _out, err = run_cli(["apply", str(f)], capsys)
    assert code == 0, err
    assert fake.vm("vm").qemu_alive
    fake.executed.clear()
    return _isolated_home / "vm"


def status(inst: Path) -> dict[str, dict[str, str]]:
    doc = json.loads((inst / "status.json").read_text())
    return {c["type"]: c for c in doc["conditions"]}


def test_same_file_is_unchanged_everywhere(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = spec_file(tmp_path, image)
    assert run_cli(["apply", "--dry-run", str(f)], capsys)[0] == 0
    code, out, _ = run_cli(["diff", "vm", str(f), "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["instances"][0]["verdict"] == "nothing"
    code, out, _ = run_cli(["apply", str(f)], capsys)
    assert code == 0 and "unchanged" in out
    assert fake.executed == []


def test_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = (running / "lima.yaml").read_text()
    f = spec_file(tmp_path, image, cpus="2", message="hi")
    code, out, _ = run_cli(["apply", "--dry-run", str(f)], capsys)
    assert code == 2
    rows = [line.split() for line in out.splitlines()]
    assert rows[2][:4] == ["cpus", "1", "2", "restart"]
    assert rows[3][:4] == ["message", '""', '"hi"', "live"]
    code, out, _ = run_cli(["apply", "--dry-run", "--format", "json", str(f)], capsys)
    doc = json.loads(out)
    assert code == 2 and doc["changed"] is True
    assert doc["instances"][0]["verdict"] == "restart"
    assert {c["path"]: c["class"] for c in doc["instances"][0]["changes"]} == {
        "cpus": "restart", "message": "live"}
    assert run_cli(["diff", "vm", str(f)], capsys)[0] == 2
    assert fake.executed == []
    assert (running / "lima.yaml").read_text() == before


def test_restart_change_restarts_once_with_the_new_spec(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boots = fake.vm("vm").boots
    code, out, err = run_cli(["apply", str(spec_file(tmp_path, image, cpus="2"))], capsys)
    assert code == 0, err
    assert "restarted" in out
    kinds = [type(a) for a in fake.executed]
    assert kinds.count(StopInstance) == 1 and kinds.count(BuildCidata) == 1
    assert kinds.index(StopInstance) < kinds.index(BuildCidata)
    assert fake.vm("vm").boots == boots + 1 and fake.vm("vm").qemu_alive
    assert "cpus: 2" in (running / "lima.yaml").read_text()
    assert status(running)["RestartRequired"]["status"] == "False"
    # Applied: the same file again is nothing to do.
    fake.executed.clear()
    assert run_cli(["apply", "--dry-run", str(spec_file(tmp_path, image, cpus="2"))],
                   capsys)[0] == 0


def test_stage_records_and_applies_at_the_next_start(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = spec_file(tmp_path, image, cpus="2")
    code, out, err = run_cli(["apply", "--restart=stage", str(f)], capsys)
    assert code == 0, err
    assert "restart required" in out
    assert not any(isinstance(a, StopInstance) for a in fake.executed)
    assert "cpus: 2" in (running / "lima.yaml").read_text()
    assert status(running)["RestartRequired"]["status"] == "True"
    code, out, _ = run_cli(["list", "--format", "json"], capsys)
    listed = {c["type"]: c["status"] for c in json.loads(out)["conditions"]}
    assert code == 0 and listed["RestartRequired"] == "True"
    # start on the running instance keeps it running; stop + start boots the staged spec.
    assert run_cli(["start", "vm"], capsys)[0] == 0
    assert not any(isinstance(a, StopInstance) for a in fake.executed)
    assert run_cli(["stop", "vm"], capsys)[0] == 0
    assert run_cli(["start", "vm"], capsys)[0] == 0
    assert status(running)["RestartRequired"]["status"] == "False"
    assert run_cli(["apply", "--dry-run", str(f)], capsys)[0] == 0


def test_live_change_needs_no_restart(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = run_cli(["apply", str(spec_file(tmp_path, image, message="hello"))],
                             capsys)
    assert code == 0, err
    assert not any(isinstance(a, StopInstance | BuildCidata) for a in fake.executed)
    applied = json.loads((running / "lima.applied.json").read_text())
    assert applied["filled"]["message"] == "hello"
    assert status(running)["RestartRequired"]["status"] == "False"
    assert run_cli(["apply", "--dry-run", str(spec_file(tmp_path, image, message="hello"))],
                   capsys)[0] == 0


@pytest.mark.parametrize(("edit", "words"), [
    ({"disk": "512MiB"}, "a disk cannot shrink"),
    ({"arch": "aarch64"}, "--recreate"),
    ({"cpus": "-1"}, "cpus"),
])
def test_refused_or_invalid_change_touches_nothing(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str], edit: dict[str, str], words: str,
) -> None:
    before = (running / "lima.yaml").read_text()
    status_before = (running / "status.json").read_text()
    code, _, err = run_cli(["apply", str(spec_file(tmp_path, image, **edit))], capsys)
    assert code == 1
    assert words in err
    assert "Traceback" not in err
    assert fake.executed == []
    assert (running / "lima.yaml").read_text() == before
    assert (running / "status.json").read_text() == status_before
    assert fake.vm("vm").qemu_alive


def test_recreate_rebuilds_when_asked(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (running / "serial.log").write_text("the old boot")  # an entry limactl makes
    f = spec_file(tmp_path, image, arch="aarch64")
    code, out, err = run_cli(["apply", "--recreate", "--dry-run", str(f)], capsys)
    assert code == 2 and "data lost" in out
    code, out, err = run_cli(["apply", "--recreate", str(f)], capsys)
    assert code == 0, err
    assert "ALL DATA IN THE GUEST IS LOST" in err
    kinds = [type(a).__name__ for a in fake.executed]
    # The delete between them is the safe delete itself (drive_absent's one-shot driver).
    assert kinds[0] == "StopInstance" and "CreateInstance" in kinds
    assert not (running / "serial.log").exists()  # the old instance directory is gone


@pytest.mark.parametrize(("setup", "words"), [
    (lambda d: (d / "notes.txt").write_text("mine"), "notes.txt"),
    (lambda d: (d / "protected").touch(), "is protected"),
])
def test_recreate_that_cannot_delete_is_refused_before_anything_stops(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,
    capsys: pytest.CaptureFixture[str], setup: object, words: str,
) -> None:
    """A file limactl did not make (a delete keeps it) or a protected instance: refused
    at once with the reason, the instance left running; never a stop, then a delete retried
    until the timeout."""
    setup(running)  # type: ignore[operator]
    before = (running / "lima.yaml").read_text()
    f = spec_file(tmp_path, image, arch="aarch64")
    code, _, err = run_cli(["apply", "--recreate", "--timeout", "30", str(f)], capsys)
    assert code == 1 and words in err and "nothing was changed" in err
    assert "Traceback" not in err
    assert fake.executed == [] and fake.vm("vm").qemu_alive
    assert (running / "lima.yaml").read_text() == before


def test_diff_errors_exit_1(
    tmp_path: Path, image: Path, running: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bad = spec_file(tmp_path, image, cpus="-1")
    code, _, err = run_cli(["diff", "vm", str(bad)], capsys)
    assert code == 1 and "cpus" in err
