"""`limactl shell` without a terminal: ssh as a child, its exit status passed on, and a
clear message when ssh fails (255) because the guest does not answer.

The guest is played by a listener on 127.0.0.1 that either sends an ssh banner (a healthy
sshd) or accepts and stays silent (what qemu's user networking does for a paused or hung
guest). The child processes are `sh`, never ssh to a real guest.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima import paths
from lima.commands import shell as shell_mod

# `limactl shell`'s child handling is checked with real child processes (exit codes, signals).
pytestmark = pytest.mark.processes


class _FakeSshd:
    """Accepts connections; sends an ssh banner only when `answers`."""

    def __init__(self, answers: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.answers = answers
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.answers:
                conn.sendall(b"SSH-2.0-fake\r\n")

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Instance `dev`, running on port 40022; ssh command lines are recorded, not run."""
    calls: list[list[str]] = []
    inst = paths.instance_dir("dev")
    inst.mkdir(parents=True)
    (inst / paths.LIMA_YAML).write_text("images: []\n")
    (inst / paths.SSH_CONFIG).write_text("Host lima-dev\n")
    monkeypatch.setattr(shell_mod, "ssh_port", lambda name, inst_dir: 40022)
    monkeypatch.setattr(shell_mod, "ensure_running", lambda *args: None)
    monkeypatch.setattr(shell_mod, "_mounts", lambda name: [])
    monkeypatch.setattr(shell_mod, "run_ssh_child",
                        lambda argv: (calls.append(list(argv)), (0, False))[1])
    return calls


@pytest.fixture
def qemu_state(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What QMP query-status answers (set [0]); None: qemu cannot be asked."""
    from lima.drivers import qmp

    state: list[str | None] = ["running"]
    monkeypatch.setattr(qmp, "query_status", lambda sock, timeout=2.0: state[0])
    return state


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch, qemu_state: list[str | None]) -> Path:
    """An instance whose host agent is alive (as far as the diagnosis can tell)."""
    from lima.drivers import procs

    inst = paths.instance_dir("hung")
    inst.mkdir(parents=True)
    monkeypatch.setattr(procs, "hostagent_pid", lambda inst_dir: 4242)
    monkeypatch.setattr(shell_mod, "BANNER_PROBE", 0.5)
    return inst


@pytest.fixture
def silent() -> Iterator[_FakeSshd]:
    srv = _FakeSshd(answers=False)
    yield srv
    srv.close()


@pytest.fixture
def healthy() -> Iterator[_FakeSshd]:
    srv = _FakeSshd(answers=True)
    yield srv
    srv.close()


def test_paused_guest_is_named_at_once_with_what_to_do(
    running: Path, silent: _FakeSshd, qemu_state: list[str | None]
) -> None:
    qemu_state[0] = "paused"
    started = time.monotonic()
    why = shell_mod.diagnose_ssh_failure("hung", running, silent.port)
    assert time.monotonic() - started < 0.4  # qemu's word is enough: no banner wait
    assert why == (
        "instance hung does not answer over ssh (qemu reports the guest as paused); the "
        "guest is hung or paused. Run `limactl stop -f hung` to stop it, then "
        "`limactl start hung`"
    )


@pytest.mark.parametrize("state", ["running", None])
def test_running_but_silent_guest_is_named_after_the_banner_wait(
    running: Path, silent: _FakeSshd, qemu_state: list[str | None], state: str | None
) -> None:
    qemu_state[0] = state
    started = time.monotonic()
    why = shell_mod.diagnose_ssh_failure("hung", running, silent.port)
    assert 0.4 < time.monotonic() - started < 3
    assert why is not None
    assert "instance hung does not answer over ssh (a new connection got no ssh banner" in why
    assert "`limactl stop -f hung`" in why


def test_answering_guest_adds_nothing(running: Path, healthy: _FakeSshd) -> None:
    # ssh exited 255 for its own reasons (or the remote command did): ssh said why.
    assert shell_mod.diagnose_ssh_failure("hung", running, healthy.port) is None


def test_stopped_instance_says_so(monkeypatch: pytest.MonkeyPatch, silent: _FakeSshd) -> None:
    inst = paths.instance_dir("gone")
    inst.mkdir(parents=True)
    why = shell_mod.diagnose_ssh_failure("gone", inst, silent.port)
    assert why == "instance gone stopped while the shell ran; run `limactl start gone`"


def test_verb_exits_255_with_the_message(
    captured: list[list[str]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lima.cli import main

    monkeypatch.setattr(shell_mod, "run_ssh_child", lambda argv: (255, False))
    monkeypatch.setattr(shell_mod, "diagnose_ssh_failure",
                        lambda name, inst_dir, port: f"instance {name} does not answer")
    with pytest.raises(SystemExit) as exc:
        main(["shell", "dev", "true"])
    assert exc.value.code == 255
    assert "limactl: instance dev does not answer" in capsys.readouterr().err


@pytest.mark.parametrize(("rc", "interrupted"), [(0, False), (3, False), (255, True)])
def test_verb_passes_the_exit_status_on(
    captured: list[list[str]], monkeypatch: pytest.MonkeyPatch,
    rc: int, interrupted: bool,
) -> None:
    from lima.cli import main

    def must_not_run(name: str, inst_dir: Path, port: int) -> str:
        raise AssertionError("diagnosed although ssh did not fail or was interrupted")

    monkeypatch.setattr(shell_mod, "run_ssh_child", lambda argv: (rc, interrupted))
    monkeypatch.setattr(shell_mod, "diagnose_ssh_failure", must_not_run)
    with pytest.raises(SystemExit) as exc:
        main(["shell", "dev", "true"])
    assert exc.value.code == rc


def test_with_a_terminal_ssh_still_runs_as_a_child(
    captured: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not exec'd even for a terminal: only a parent can explain a failed session.
    from click.testing import CliRunner

    monkeypatch.setattr(shell_mod, "wants_pty", lambda: True)
    result = CliRunner().invoke(shell_mod.shell, ["dev"])
    assert result.exit_code == 0, result.output
    assert len(captured) == 1 and "-t" in captured[0]


@pytest.mark.parametrize(("script", "expected"), [
    ("exit 0", 0), ("exit 7", 7), ("exit 255", 255), ("kill -TERM $$", 128 + 15),
])
def test_child_exit_status(script: str, expected: int) -> None:
    assert shell_mod.run_ssh_child(["sh", "-c", script]) == (expected, False)


def test_sigterm_reaches_the_child() -> None:
    # `timeout 10 limactl shell ...` signals limactl alone; ssh must end with it. Run in a
    # process of its own so a regression cannot kill the test runner.
    code = (
        "import os, signal, threading, time\n"
        "from lima.commands.shell import run_ssh_child\n"
        "threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        "t = time.monotonic()\n"
        "print(run_ssh_child(['sleep', '30']), round(time.monotonic() - t))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(143,", "True)", "0"]
