"""`limactl shell` and `lima` through the real entry points, with a stand-in `ssh` ($SSH)
that records its arguments and runs the remote command here with /bin/sh: what
--workdir, --shell, --preserve-env, `--` and --reconnect make the guest shell do, and the
messages and exit codes for bad flags. The instance's status and ssh port are stubbed
(no guest); everything after the command line is the real code path."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import pytest

from lima import paths
from lima.cli import lima_main
from lima.commands import shell as shell_mod
from lima.drivers import store
from tests.component.cli import run_cli

STANDIN = """#!/bin/sh
# stand-in for ssh: record the arguments (one per line, a blank line after each call)
for a in "$@"; do printf '%s\\n' "$a"; done >> "$STANDIN_LOG"
echo >> "$STANDIN_LOG"
for a in "$@"; do [ "$a" = "-O" ] && exit "${STANDIN_O_RC:-0}"; done
for last in "$@"; do :; done
exec /bin/sh -c "$last"
"""


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Instance `dev`, "running" on port 40022, reached through the stand-in ssh; returns
    the log of the stand-in's calls."""
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(STANDIN)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "ssh.log"
    log.touch()
    home = tmp_path / "home"
    home.mkdir()
    inst = paths.instance_dir("dev")
    inst.mkdir(parents=True)
    (inst / paths.LIMA_YAML).write_text("images: []\nmounts: []\n")
    (inst / paths.SSH_CONFIG).write_text("Host lima-dev\n")
    for k, v in {"SSH": str(ssh), "STANDIN_LOG": str(log), "SHELL": "/bin/sh",
                 "HOME": str(home)}.items():
        monkeypatch.setenv(k, v)
    for k in ("LIMA_SHELLENV_BLOCK", "LIMA_SHELLENV_ALLOW", "LIMA_INSTANCE", "LIMA_SHELL",
              "LIMA_WORKDIR", "ENV"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(store, "inspect_processes", lambda name, d: store.Inspection(
        name=name, dir=d, status=store.STATUS_RUNNING))
    monkeypatch.setattr(shell_mod, "ssh_port", lambda name, d: 40022)
    monkeypatch.chdir(tmp_path)
    return log


def calls(log: Path) -> list[list[str]]:
    return [c.split("\n") for c in log.read_text().split("\n\n") if c]


def test_workdir_and_command(standin: Path, tmp_path: Path,
                             capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "w").mkdir()
    code, out, err = run_cli(["shell", "--workdir", str(tmp_path / "w"), "dev", "pwd"], capfd)
    assert (code, out) == (0, f"{tmp_path / 'w'}\n"), err
    (argv,) = calls(standin)
    assert argv[:2] == ["-F", str(paths.instance_dir("dev") / "ssh.config")]
    assert argv[-3:-1] == ["lima-dev", "--"]


def test_missing_workdir_fails_with_exit_1(standin: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["shell", "--workdir=/nonexistent/dir", "dev", "echo", "no"], capfd)
    assert code == 1 and out == ""


def test_preserve_env_words(standin: Path, capfd: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOO", "foo bar")
    monkeypatch.setenv("MY_TOKEN", "secret")
    monkeypatch.setenv("LIMA_SHELLENV_BLOCK", "+*TOKEN")
    code, _, err = run_cli(["shell", "dev", "true"], capfd)
    assert code == 0, err
    code, _, err = run_cli(["shell", "--preserve-env", "dev", "true"], capfd)
    assert code == 0, err
    plain, preserving = (c[-1] for c in calls(standin))
    assert plain == 'exec "$SHELL" -l -c true'
    words = shlex.split(preserving)
    assert words[:2] == ["exec", "env"] and words[-4:] == ["$SHELL", "-l", "-c", "true"]
    assert "FOO=foo bar" in words and "LIMA_SHELLENV_BLOCK=+*TOKEN" in words
    assert not [w for w in words if w.startswith(("MY_TOKEN=", "PATH=", "HOME="))]


def test_preserve_env_runs_env_in_the_guest_shell(standin: Path,
                                                  capfd: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in runs the remote command with a clean environment, as sshd would.
    standin_clean = Path(os.environ["SSH"])
    standin_clean.write_text(STANDIN.replace('exec /bin/sh -c "$last"',
                                             'exec env -i HOME="$HOME" SHELL=/bin/sh '
                                             '/bin/sh -c "$last"'))
    monkeypatch.setenv("FOO", "foo bar")
    monkeypatch.setenv("SSH_FOO", "ssh_foo")
    cmd = ["sh", "-c", 'echo "FOO=${FOO-unset} SSH_FOO=${SSH_FOO-unset}"']
    code, out, err = run_cli(["shell", "dev", *cmd], capfd)
    assert (code, out) == (0, "FOO=unset SSH_FOO=unset\n"), err
    code, out, err = run_cli(["shell", "--preserve-env", "dev", *cmd], capfd)
    assert (code, out) == (0, "FOO=foo bar SSH_FOO=unset\n"), err
    monkeypatch.setenv("LIMA_SHELLENV_ALLOW", "SSH_*")
    code, out, err = run_cli(["shell", "--preserve-env", "dev", *cmd], capfd)
    assert (code, out) == (0, "FOO=foo bar SSH_FOO=ssh_foo\n"), err


def test_shell_flag(standin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["shell", "--shell", "/bin/dash", "dev", "echo", "x"], capfd)
    assert code == 0, err
    assert calls(standin)[0][-1] == "exec /bin/dash -l -c 'echo x'"


def test_double_dash_passes_a_flag_like_command(standin: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["shell", "--instance", "dev", "--", "--nonexistent-flag"], capfd)
    assert "unknown flag" not in err
    # the guest shell is handed the word, as Lima hands it (sh then rejects it: exit 2)
    assert calls(standin)[0][-1] == 'exec "$SHELL" -l -c --nonexistent-flag'
    assert code == 2


@pytest.mark.parametrize(("args", "message"), [
    (["shell", "--tty=false", "--instance", "dev", "--nonexistent-flag"],
     "unknown flag: --nonexistent-flag"),
    (["shell", "--tty=false"], "requires instance name as first argument"),
    (["shell", "--tty=false", "nonexistent"],
     "instance `nonexistent` does not exist, run `limactl create nonexistent` to create a "
     "new instance"),
])
def test_bad_command_lines_exit_1(standin: Path, capfd: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    code, out, err = run_cli(args, capfd)
    assert (code, out) == (1, "")
    assert message in err
    assert calls(standin) == []


def test_reconnect_exits_the_master(standin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (paths.instance_dir("dev") / paths.SSH_SOCK).touch()
    code, _, err = run_cli(["shell", "--reconnect", "dev", "true"], capfd)
    assert code == 0, err
    first, second = calls(standin)
    assert first[-4:] == ["exit", "-p", "40022", "lima-dev"] and "-O" in first
    assert second[-1] == "exec \"$SHELL\" -l -c true"


def test_reconnect_removes_a_stale_socket(standin: Path, capfd: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    sock = paths.instance_dir("dev") / paths.SSH_SOCK
    sock.touch()  # nothing listens: the master is gone
    monkeypatch.setenv("STANDIN_O_RC", "255")
    code, _, err = run_cli(["shell", "--reconnect", "dev", "true"], capfd)
    assert code == 0, err
    assert not sock.exists()
    assert "Removed stale ssh control socket for the instance `dev`" in caplog.text


def test_reconnect_without_a_master_does_nothing(standin: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["shell", "--reconnect", "dev", "true"], capfd)
    assert code == 0, err
    assert len(calls(standin)) == 1


def lima(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        lima_main(args)
        raise SystemExit(0)
    out, err = capfd.readouterr()
    return (exc.value.code if isinstance(exc.value.code, int) else 1), out, err


def test_lima_wrapper(standin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_INSTANCE", "dev")
    monkeypatch.setenv("LIMA_WORKDIR", str(tmp_path))
    code, out, err = lima(["--tty=false", "--start=false", "pwd"], capfd)
    assert (code, out) == (0, f"{tmp_path}\n"), err
    code, _, err = lima(["--tty=false", "--nonexistent-flag"], capfd)
    assert code == 1 and "unknown flag: --nonexistent-flag" in err
    monkeypatch.delenv("LIMA_INSTANCE")
    code, _, err = lima(["true"], capfd)
    assert code == 1 and "instance `default` does not exist" in err


def test_lima_version(capfd: pytest.CaptureFixture[str]) -> None:
    from lima import LIMA_COMPAT_VERSION

    code, out, _ = lima(["--version"], capfd)
    assert code == 0 and LIMA_COMPAT_VERSION in out


def test_info_shows_the_default_block_list(capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("LIMA_SHELLENV_BLOCK", "ONLY_THIS")  # info shows the built-in list
    code, out, err = run_cli(["info"], capfd)
    assert code == 0, err
    block = json.loads(out)["shellEnvBlock"]
    assert {"PATH", "SSH_*", "USER"} <= set(block) and "ONLY_THIS" not in block


def test_lima_help_names_the_instance(capfd: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_INSTANCE", "dev")
    code, out, _ = lima(["--help"], capfd)
    assert code == 0 and out.startswith("Usage: lima [COMMAND...]")
    assert "`limactl shell dev`" in out and "$LIMA_WORKDIR" in out


def _status(monkeypatch: pytest.MonkeyPatch, status: str) -> list[str]:
    """The instance shows `status` until something starts it; returns the starts made."""
    started: list[str] = []

    def inspect(name: str, d: Path) -> store.Inspection:
        now = store.STATUS_RUNNING if started else status
        return store.Inspection(name=name, dir=d, status=now)

    monkeypatch.setattr(store, "inspect_processes", inspect)
    monkeypatch.setattr(shell_mod, "start_instance", started.append)
    return started


def test_a_suspended_instance_is_resumed_without_start(
        standin: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """(The line goes to stderr through the CLI's log handler; pytest's replaces it.)"""
    caplog.set_level("INFO")
    started = _status(monkeypatch, store.STATUS_SUSPENDED)
    code, out, _ = run_cli(["shell", "dev", "echo", "awake"], capfd)
    assert (code, out) == (0, "awake\n")
    assert started == ["dev"]
    assert "Instance `dev` is suspended; resuming it" in caplog.text


def test_start_false_keeps_a_suspended_instance_asleep(
        standin: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = _status(monkeypatch, store.STATUS_SUSPENDED)
    code, _, err = run_cli(["shell", "--start=false", "dev", "true"], capfd)
    assert code == 1 and not started
    assert "is suspended, run `limactl start dev`" in err


def test_a_stopped_instance_is_still_refused_without_start(
        standin: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = _status(monkeypatch, store.STATUS_STOPPED)
    code, _, err = run_cli(["shell", "dev", "true"], capfd)
    assert code == 1 and not started
    assert "is stopped, run `limactl start dev`" in err
