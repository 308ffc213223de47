"""Lima's documented one-liners (`limactl --help`'s examples and the README's, those that
need no network) on the fast `build:tiny` guest standing in for template:default, plus
`limactl start --progress` and `--foreground` (what `limactl autostart`'s unit runs)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl


def lima(limactl: Limactl, *args: str) -> subprocess.CompletedProcess[str]:
    """The `lima` wrapper, as a user types it (LIMA_INSTANCE unset: "default")."""
    env = {k: v for k, v in limactl.env().items() if k != "LIMA_INSTANCE"}
    return subprocess.run([sys.executable, "-c", "from lima.cli import lima_main; lima_main()",
                           *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_default_instance_as_lima_documents_it(limactl: Limactl, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(REPO / "examples" / "tiny.yaml", templates / "default.yaml")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(templates))

    # $ limactl start
    limactl("start", timeout=400)
    # $ lima uname -a
    uname = lima(limactl, "uname", "-a")
    assert uname.returncode == 0 and uname.stdout.startswith("Linux "), uname.stderr
    # $ limactl list NAME --format 'unix://{{.Dir}}/sock/docker.sock' (README, DOCKER_HOST)
    host = limactl("list", "default", "--format", "unix://{{.Dir}}/sock/docker.sock").stdout
    assert host == f"unix://{limactl.home / 'default'}/sock/docker.sock\n"
    # $ limactl stop
    assert "default: stopped" in limactl("stop", timeout=200).stdout

    # limactl start --progress: the guest's console while waiting
    shown = limactl("start", "--progress", timeout=400)
    assert "[console] " in shown.stderr and "default: running" in shown.stdout
    limactl("stop", timeout=200)

    # limactl start --foreground: stays while the VM runs; SIGTERM stops the instance
    fg = limactl.popen("start", "--foreground", "default")
    try:
        ready = ""
        assert fg.stdout is not None
        for line in fg.stdout:  # "default: running" once it is up
            ready = line
            if "running" in line:
                break
        assert "default: running" in ready
        assert fg.poll() is None  # still in the foreground
        fg.send_signal(signal.SIGTERM)
        assert fg.wait(timeout=200) == 0
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
    listed = limactl("list", "default", "--format", "{{.Status}}").stdout.strip()
    assert listed == "Stopped"
    limactl("delete", "default", timeout=120)
    assert not (limactl.home / "default").exists()
