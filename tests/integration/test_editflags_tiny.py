"""`limactl start` with no argument and `limactl edit --cpus` of a running instance, on
the fast `build:tiny` guest: a change that needs a restart waits for the next start
without --start, and restarts the guest with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl


def cpus_in_guest(limactl: Limactl) -> int:
    out = limactl("shell", "default", "grep", "-c", "^processor", "/proc/cpuinfo").stdout
    return int(out.strip())


def test_start_default_then_edit_cpus(limactl: Limactl, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # template:default is the tiny guest here (the built-in one would download Ubuntu).
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(REPO / "examples" / "tiny.yaml", templates / "default.yaml")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(templates))

    out = limactl("start", "--timeout", "5m", timeout=400)
    assert "default: running" in out.stdout
    assert cpus_in_guest(limactl) == 1

    staged = limactl("edit", "default", "--cpus", "2")
    assert "at the next start" in staged.stdout
    assert "cpus: 2" in (limactl.home / "default" / "lima.yaml").read_text()
    assert cpus_in_guest(limactl) == 1  # still the old boot

    restarted = limactl("edit", "--cpus", "3", "--start", "default", timeout=400)
    assert "restarted" in restarted.stdout
    assert cpus_in_guest(limactl) == 3

    limactl("delete", "-f", "default", timeout=120)
    assert not (limactl.home / "default").exists()
