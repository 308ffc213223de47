"""`limactl start` with no argument, from a URL with an edit flag, and `limactl edit
--cpus` of a running instance, on the fast `build:tiny` guest: a change that needs a
restart waits for the next start without --start, and restarts the guest with it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
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


def test_start_from_a_url_with_edit_flags(limactl: Limactl, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(REPO / "examples" / "tiny.yaml", served / "web.yaml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], cwd=served,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        out = limactl("start", "--cpus", "2", f"http://127.0.0.1:{port}/web.yaml",
                      timeout=400)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "web: running" in out.stdout
    assert limactl("shell", "web", "grep", "-c", "^processor", "/proc/cpuinfo"
                   ).stdout.strip() == "2"
    limactl("delete", "-f", "web", timeout=120)
