"""Waking a suspended instance on real QEMU with the tiny guest: `limactl shell` resumes a
suspended instance by itself (no `--start`), with a line on stderr, and the guest is the
one that was suspended (a file written before is there); `limactl controller
--suspend-idle` suspends an idle instance, keeps it asleep, lets `limactl shell` wake it
and suspends it again once it is idle again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for
from tests.integration.test_controller import Controller, _status, _until

pytestmark = pytest.mark.integration


def test_shell_resumes_a_suspended_instance(limactl: Limactl, tmp_path: Path) -> None:
    tiny = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", tiny)
    limactl("apply", str(tiny), timeout=300)
    limactl("shell", "t", "sh", "-c", "echo before-suspend > /tmp/marker")
    limactl("suspend", "t", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    assert _status(limactl, "t") == "Suspended"

    out = limactl("shell", "t", "cat", "/tmp/marker", timeout=120)
    assert out.stdout == "before-suspend\n"
    assert "Instance `t` is suspended; resuming it" in out.stderr
    assert "booting" not in out.stderr  # resumed, not booted afresh
    assert _status(limactl, "t") == "Running"
    limactl("stop", "t", timeout=120)


def test_controller_suspends_an_idle_instance_and_shell_wakes_it(
        limactl: Limactl, tmp_path: Path) -> None:
    folder = tmp_path / "vms"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "tiny.yaml", folder / "t.yaml")
    ctl = Controller(limactl, folder, tmp_path / "controller.log", "--resync=1",
                     "--suspend-idle=2s")
    try:
        _until(lambda: _status(limactl, "t") == "Suspended", 300, "the idle suspend")
        [suspend] = ctl.events("t", "idle-suspend")
        assert suspend["sessions"] == 0 and suspend["connections"] == 0
        _until(lambda: bool(ctl.events("t", "idle-asleep")), 30, "the controller to keep it")
        assert _status(limactl, "t") == "Suspended"  # several resyncs later: not resumed

        out = limactl("shell", "t", "echo", "awake", timeout=120)
        assert out.stdout == "awake\n"
        assert "resuming it" in out.stderr
        _until(lambda: bool(ctl.events("t", "idle-woken")), 30, "the controller to see it")
        # Idle again: suspended again (the shell session counted while it lasted).
        _until(lambda: len(ctl.events("t", "idle-suspend")) == 2, 120, "a second suspend")
        _until(lambda: _status(limactl, "t") == "Suspended", 120, "the second suspend")
    finally:
        assert ctl.end() == 0
