"""`limactl screenshot` refusals through the real CLI (no guest): a missing or stopped
instance, an unknown extension, and a guest without a display, in Lima's words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lima import paths
from lima.drivers import store
from tests.component.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def inst() -> Path:
    d = paths.lima_home() / "shot"
    d.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "tiny.yaml", d / "lima.yaml")
    return d


def test_missing_and_stopped(inst: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["screenshot", "nosuch"], capsys)
    assert code == 1 and "instance 'nosuch' does not exist" in err
    code, _, err = run_cli(["screenshot", "shot"], capsys)
    assert code == 1 and 'instance "shot" is not running (status: Stopped)' in err
    code, _, err = run_cli(["screenshot"], capsys)
    assert code != 0  # a missing argument


def test_extension_and_no_display(inst: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def running(name: str, inst_dir: Path) -> store.Inspection:
        return store.Inspection(name=name, dir=inst_dir, status=store.STATUS_RUNNING)

    monkeypatch.setattr(store, "inspect_processes", running)
    code, _, err = run_cli(["screenshot", "shot", "-o", str(tmp_path / "a.jpg")], capsys)
    assert code == 1 and 'unsupported output extension ".jpg": must be .png or .bmp' in err
    code, _, err = run_cli(["screenshot", "shot", "--output", str(tmp_path / "a.BMP")],
                           capsys)
    assert code == 1
    assert ("screenshot failed: VM has no display configured — set video.display "
            '(e.g., "default") in the instance config') in err
    assert not list(tmp_path.iterdir())
