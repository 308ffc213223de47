"""`limactl apply` of a file's `x-limapy.runState`, and its plan (`apply --dry-run`, `limactl
diff`), through the real CLI entry point with the FakeDriver standing in for QEMU: a live
change (no restart) that suspends, resumes, stops and starts; suspended refused with
virtiofs mounts (exit 1, left running, RunStateRefused); the field leaves the generation
alone, so a resume is not turned into a cold boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lima.controller.fake import FakeDriver
from lima.states.actions import BuildCidata, ResumeInstance, SuspendInstance
from tests.component.cli import run_cli
from tests.component.test_apply_plan import (  # noqa: F401 (fixtures)
    fake,
    image,
    running,
    spec_file,
    status,
)

pytestmark = pytest.mark.component


@pytest.fixture(autouse=True)
def run_state_now(monkeypatch: pytest.MonkeyPatch, fake: FakeDriver) -> None:  # noqa: F811
    """The instance's run state as the fake world has it (no pid files to read there)."""
    def now(name: str) -> str:
        vm = fake.vms.get(name)
        if vm is None:
            return ""
        if vm.qemu_alive:
            return "running"
        return "suspended" if vm.saved_generation is not None else "stopped"

    monkeypatch.setattr("lima.commands.diff._run_state_now", now)


def wanting(tmp_path: Path, img: Path, state: str, extra: str = "") -> Path:
    f = spec_file(tmp_path, img)
    f.write_text(f.read_text() + f"x-limapy:\n  runState: {state}\n" + extra)
    return f


def test_the_plan_shows_the_run_state_as_a_live_change(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = wanting(tmp_path, image, "suspended")
    code, out, _ = run_cli(["apply", "--dry-run", str(f)], capsys)
    assert code == 2
    assert out.splitlines()[0] == "vm: live", out
    assert out.splitlines()[2].split()[:4] == ["x-limapy.runState", '"running"',
                                               '"suspended"', "live"]
    code, out, _ = run_cli(["diff", "vm", str(f), "--format", "json"], capsys)
    [inst] = json.loads(out)["instances"]
    assert code == 2 and inst["verdict"] == "live"
    assert inst["changes"] == [{"path": "x-limapy.runState", "old": "running",
                                "new": "suspended", "class": "live",
                                "action": "suspend (no restart)"}]
    assert fake.executed == []
    # A file asking for what the instance already is: nothing to do.
    same = wanting(tmp_path, image, "running")
    assert run_cli(["diff", "vm", str(same)], capsys)[0] == 0


def test_apply_drives_every_transition(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    vm = fake.vm("vm")
    gen = json.loads((running / "status.json").read_text())["generation"]
    code, out, err = run_cli(["apply", str(wanting(tmp_path, image, "suspended"))], capsys)
    assert code == 0, err
    assert out.strip().endswith("vm: suspended") and vm.saved_generation is not None
    assert not vm.qemu_alive and any(isinstance(a, SuspendInstance) for a in fake.executed)
    assert json.loads((running / "status.json").read_text())["generation"] == gen
    assert run_cli(["diff", "vm", str(wanting(tmp_path, image, "suspended"))], capsys)[0] == 0

    fake.executed.clear()
    code, out, err = run_cli(["apply", str(wanting(tmp_path, image, "running"))], capsys)
    assert code == 0, err
    assert vm.qemu_alive and vm.resumes == 1  # resumed: not a boot
    assert any(isinstance(a, ResumeInstance) for a in fake.executed)
    assert not any(isinstance(a, BuildCidata) for a in fake.executed)

    code, out, err = run_cli(["apply", str(wanting(tmp_path, image, "stopped"))], capsys)
    assert code == 0, err
    assert out.strip().endswith("vm: stopped (changes applied)") and not vm.qemu_alive
    assert run_cli(["diff", "vm", str(wanting(tmp_path, image, "stopped"))], capsys)[0] == 0

    boots = vm.boots
    code, out, err = run_cli(["apply", str(wanting(tmp_path, image, "running"))], capsys)
    assert code == 0, err
    assert vm.qemu_alive and vm.boots == boots + 1


def test_suspended_is_refused_with_virtiofs_mounts(
    tmp_path: Path, image: Path, running: Path, fake: FakeDriver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    mounts = f"mountType: virtiofs\nmounts:\n- location: {tmp_path}\n"
    f = wanting(tmp_path, image, "suspended", mounts)
    code, _, err = run_cli(["apply", str(f)], capsys)
    assert code == 1
    assert "cannot be suspended: QEMU cannot save a guest with virtiofs mounts" in err
    assert "left running" in err
    vm = fake.vm("vm")
    assert vm.qemu_alive and vm.saved_generation is None
    refused = status(running)["RunStateRefused"]
    assert refused["status"] == "True" and "virtiofs" in refused["message"]
    code, _, err = run_cli(["apply", str(wanting(tmp_path, image, "running", mounts))],
                           capsys)
    assert code == 0, err
    assert status(running)["RunStateRefused"]["status"] == "False"
