"""`limactl controller DIR` as a real process over the tiny guest: a dropped file comes up,
an invalid edit is reported once and leaves the VM running, SIGTERM leaves it running, a
removed file with --prune=stop stops it, and a controller killed -9 in mid-boot is
replaced by one that converges with exactly one qemu."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

TINY = (REPO / "examples" / "tiny.yaml").read_text()


class Controller:
    def __init__(self, lc: Limactl, folder: Path, log: Path, *args: str) -> None:
        self.log = log
        self.out = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lima.cli", "controller", *args, str(folder)],
            env=lc.env(), cwd=REPO, stdout=self.out, stderr=self.out, text=True,
            start_new_session=True,
        )

    def events(self, name: str, event: str) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("instance") == name and rec.get("event") == event:
                out.append(rec)
        return out

    def end(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.out.close()
        return rc


def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _status(lc: Limactl, name: str) -> str:
    proc = lc("list", "--json", name, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return ""
    return str(json.loads(proc.stdout.splitlines()[0]).get("status", ""))


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "vms"
    d.mkdir()
    yield d


def test_controller_end_to_end(limactl: Limactl, folder: Path, tmp_path: Path) -> None:
    log = tmp_path / "controller.log"
    ctl = Controller(limactl, folder, log, "--prune=stop", "--resync=3")
    try:
        (folder / "tiny.yaml").write_text(TINY)
        _until(lambda: _status(limactl, "tiny") == "Running", 300, "tiny Running")
        listed = json.loads(limactl("list", "--json", "tiny").stdout.splitlines()[0])
        assert listed["managedBy"] == f"controller:{folder.resolve()}"
        stop = limactl("stop", "tiny", check=False)
        assert stop.returncode == 1 and "controller pause tiny" in stop.stderr
        pids = qemu_pids_for(limactl.home)
        assert len(pids) == 1

        # An invalid edit: reported once (over two resyncs), the VM untouched.
        (folder / "tiny.yaml").write_text(TINY + "cpus: -1\n")
        time.sleep(7)  # two resyncs at least
        invalid = ctl.events("tiny", "invalid")
        assert len(invalid) == 1, invalid
        assert qemu_pids_for(limactl.home) == pids
        (folder / "tiny.yaml").write_text(TINY)

        # SIGTERM: the controller exits cleanly, the VM keeps running.
        assert ctl.end(signal.SIGTERM) == 0
        assert qemu_pids_for(limactl.home) == pids
        assert _status(limactl, "tiny") == "Running"

        # A new controller; the file is removed: --prune=stop stops the instance.
        ctl = Controller(limactl, folder, log, "--prune=stop", "--resync=3")
        (folder / "tiny.yaml").unlink()
        _until(lambda: _status(limactl, "tiny") == "Stopped", 180, "tiny Stopped")
        assert not qemu_pids_for(limactl.home)
        # The event follows the pass that stopped it: qemu's exit can be seen first.
        _until(lambda: bool(ctl.events("tiny", "pruned")), 60, "the pruned event")
        assert limactl("list", "--json", "tiny").stdout.count("managedBy") == 0
    finally:
        ctl.end(signal.SIGKILL)


def test_controller_killed_mid_boot_is_replaced_with_one_qemu(
    limactl: Limactl, folder: Path, tmp_path: Path
) -> None:
    log = tmp_path / "controller.log"
    ctl = Controller(limactl, folder, log)
    try:
        (folder / "tiny.yaml").write_text(TINY)
        qemu_pid = limactl.home / "tiny" / "qemu.pid"
        _until(qemu_pid.exists, 300, "qemu started")
        os.killpg(ctl.proc.pid, signal.SIGKILL)  # the controller only: VMs have sessions
        ctl.end(signal.SIGKILL)
        ctl = Controller(limactl, folder, log)
        _until(lambda: _status(limactl, "tiny") == "Running", 300, "tiny Running again")
        time.sleep(3)
        assert len(qemu_pids_for(limactl.home)) == 1
    finally:
        ctl.end(signal.SIGKILL)
