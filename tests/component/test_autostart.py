"""`limactl autostart enable|disable` and `start-at-login` through the real CLI, with a
private HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR: the unit file Lima writes, Lima's
messages, systemctl run only when a (here: fake) user manager answers. The user's real
systemd is never reached: XDG_RUNTIME_DIR is a temp dir and `systemctl` a fake on PATH."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima import paths
from lima.drivers import autostart
from tests.component.cli import run_cli

REPO = Path(__file__).resolve().parents[2]

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
[ "$2" = enable ] && echo "Created symlink default.target.wants/$3." >&2
exit {code}
"""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd is PID 1 (a stand-in /run/systemd/system), a temp HOME, no user manager."""
    run_dir = tmp_path / "run-systemd-system"
    run_dir.mkdir()
    monkeypatch.setattr(autostart, "SYSTEMD_RUN_DIR", run_dir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    inst = paths.lima_home() / "dev"
    inst.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "tiny.yaml", inst / paths.LIMA_YAML)
    return tmp_path


@pytest.fixture
def manager(host: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A reachable (fake) user manager: its socket in XDG_RUNTIME_DIR, `systemctl` on PATH
    logging its arguments."""
    runtime = host / "rt"
    (runtime / "systemd").mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(runtime / "systemd" / "private"))
    bindir = host / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=host / "systemctl.log", code=0))
    fake.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    try:
        yield host / "systemctl.log"
    finally:
        sock.close()


def test_enable_writes_lima_unit_and_runs_systemctl(
        manager: Path, host: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        code, _, err = run_cli(["autostart", "enable", "dev"], capfd)
    assert code == 0
    unit = host / "config" / "systemd" / "user" / "lima-vm@dev.service"
    text = unit.read_text()
    assert unit.stat().st_mode & 0o777 == 0o644
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    binary = exec_start.removeprefix("ExecStart=").removesuffix(" start %i --foreground")
    assert binary.endswith("/limactl") and os.access(binary, os.X_OK)
    for line in ("WorkingDirectory=%h", "Type=simple", "TimeoutSec=10",
                 "Restart=on-failure", "WantedBy=default.target", "[Install]"):
        assert line in text.splitlines()
    assert manager.read_text() == "--user enable lima-vm@dev.service\n"
    assert "Created symlink" in err
    assert "Instance `dev` registered to start at login" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(["autostart", "disable", "dev"], capfd)[0] == 0
    assert not unit.exists()
    assert manager.read_text().splitlines()[-1] == "--user disable lima-vm@dev.service"
    assert "Instance `dev` unregistered from start at login" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(["autostart", "disable", "dev"], capfd)[0] == 0
    assert "Instance `dev` is not registered for automatic startup" in caplog.text


def test_failing_systemctl_is_lima_error(manager: Path, host: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    fake = host / "bin" / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=manager, code=1))
    code, _, err = run_cli(["autostart", "enable", "dev"], capfd)
    assert code == 1
    assert "failed to register instance `dev` to start at login: exit status 1" in err


def test_no_user_manager_writes_the_unit_and_says_so(
        host: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")  # ~/.config, as Lima
    with caplog.at_level(logging.INFO):
        assert run_cli(["autostart", "enable", "dev"], capsys)[0] == 0
    unit = host / "home" / ".config" / "systemd" / "user" / "lima-vm@dev.service"
    assert unit.is_file()
    assert ("XDG_RUNTIME_DIR is not set, so no systemd user manager is reachable: systemctl "
            "was not run; run `systemctl --user enable lima-vm@dev.service` in your login "
            "session") in caplog.text


def test_refusals(host: Path, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["autostart", "enable", "--condition=boot", "dev"], capsys)
    assert code == 1 and "--condition=boot is only supported on macOS" in err
    code, _, err = run_cli(["autostart", "enable", "nosuch"], capsys)
    assert code == 1 and 'instance "nosuch" not found' in err
    code, _, err = run_cli(["autostart", "disable", "nosuch"], capsys)
    assert code == 1 and 'instance "nosuch" not found' in err
    monkeypatch.setattr(autostart, "SYSTEMD_RUN_DIR", host / "absent")
    code, _, err = run_cli(["autostart", "enable", "dev"], capsys)
    assert code == 1
    assert ("failed to register instance `dev` to start at login: autostart is not "
            "supported on linux") in err
    code, _, err = run_cli(["autostart", "disable", "dev"], capsys)
    assert code == 1 and "autostart is not supported on linux" in err
    assert not (host / "config").exists()


def test_start_at_login_deprecated(host: Path, capsys: pytest.CaptureFixture[str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    unit = host / "config" / "systemd" / "user" / "lima-vm@dev.service"
    with caplog.at_level(logging.INFO):
        code, _, err = run_cli(["start-at-login", "dev"], capsys)
        assert code == 0
        assert 'Command "start-at-login" is deprecated, use "limactl autostart" instead' in err
        assert unit.is_file()
        assert run_cli(["start-at-login", "dev"], capsys)[0] == 0
        assert run_cli(["start-at-login", "--enabled=false", "dev"], capsys)[0] == 0
        assert not unit.exists()
        assert run_cli(["start-at-login", "--enabled=false", "dev"], capsys)[0] == 0
        assert run_cli(["start-at-login"], capsys)[0] == 0  # `default`: none here
    text = caplog.text
    for line in ("The autostart entry for instance `dev` has been created",
                 "The autostart entry for instance `dev` has been updated",
                 "The autostart entry for instance `dev` has been unregistered",
                 "The autostart entry for instance `dev` is not registered",
                 "Instance `default` not found"):
        assert line in text
    code, _, err = run_cli(["start-at-login", "--enabled=maybe", "dev"], capsys)
    assert code == 1 and 'invalid argument "maybe" for "--enabled" flag' in err
    code, out, _ = run_cli(["--help"], capsys)
    assert "start-at-login" not in out and "autostart" in out
