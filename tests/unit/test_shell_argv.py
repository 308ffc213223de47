"""`limactl shell`: the remote script and the ssh argv (pure), and the verb's wiring."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lima import paths
from lima.commands import shell as shell_mod
from lima.commands.shell import map_to_guest, quote_command, remote_script, ssh_argv
from lima.errors import LimaError

MOUNTS = [("/home/u", "/home/u"), ("/home/u/src", "/mnt/src"), ("/data", "/srv/data")]


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [
        ("/home/u", "/home/u"),
        ("/home/u/docs", "/home/u/docs"),
        ("/home/u/src", "/mnt/src"),
        ("/home/u/src/proj/a", "/mnt/src/proj/a"),
        ("/data/x/", "/srv/data/x"),
        ("/home/user2", None),  # a prefix of the string, not of the path
        ("/tmp", None),
    ],
)
def test_map_to_guest(cwd: str, expected: str | None) -> None:
    assert map_to_guest(cwd, MOUNTS) == expected


def test_interactive_login_shell_at_home() -> None:
    assert remote_script([], cwd="/tmp", mounts=MOUNTS) == 'exec "$SHELL" -l'


def test_command_in_mapped_cwd() -> None:
    script = remote_script(["ls", "-l", "my file"], cwd="/home/u/src/p", mounts=MOUNTS)
    assert script == "cd /mnt/src/p || cd ~ ; exec \"$SHELL\" -l -c 'ls -l '\"'\"'my file'\"'\"''"
    # What the guest's sh will see as the -c argument:
    assert shlex.split(script.split(" -c ", 1)[1]) == ["ls -l 'my file'"]


def test_mounted_host_home_is_the_fallback_as_in_lima() -> None:
    # cwd not mounted, the host home is: the shell starts in the home's mount point.
    assert remote_script(["pwd"], cwd="/tmp", mounts=MOUNTS, home="/home/u") == (
        "cd /home/u || cd ~ ; exec \"$SHELL\" -l -c pwd")
    # cwd mounted: entered, the mounted home when it is gone in the guest.
    assert remote_script(["pwd"], cwd="/data/x", mounts=MOUNTS, home="/home/u") == (
        "cd /srv/data/x || cd /home/u ; exec \"$SHELL\" -l -c pwd")
    # neither mounted: no cd at all.
    assert remote_script(["pwd"], cwd="/tmp", mounts=MOUNTS[2:], home="/home/u") == (
        "exec \"$SHELL\" -l -c pwd")


def test_workdir_must_exist_and_wins_over_cwd() -> None:
    script = remote_script(["pwd"], workdir="/opt/my dir", cwd="/home/u", mounts=MOUNTS)
    assert script.startswith("cd '/opt/my dir' || exit 1 ; exec ")


def test_shell_override_is_quoted() -> None:
    assert remote_script(["true"], shell="/bin/zsh") == "exec /bin/zsh -l -c true"


def test_leading_env_assignments_stay_assignments() -> None:
    assert quote_command(["FOO=a b", "BAR=1", "env", "X=y"]) == "FOO='a b' BAR=1 env X=y"
    assert quote_command(["echo", "A=b c"]) == "echo 'A=b c'"


def test_ssh_argv_with_config(tmp_path: Path) -> None:
    (tmp_path / paths.SSH_CONFIG).write_text("Host lima-dev\n  Port 1\n")
    argv = ssh_argv("dev", tmp_path, port=60022, script="exec sh -l", tty=True)
    assert argv[:3] == ["ssh", "-F", str(tmp_path / paths.SSH_CONFIG)]
    assert "-t" in argv
    assert argv[-5:] == ["-p", "60022", "lima-dev", "--", "exec sh -l"]


def test_ssh_argv_without_tty_or_config(tmp_path: Path) -> None:
    argv = ssh_argv("dev", tmp_path, port=2222, script="x", tty=False, user="alice",
                    colorterm=True)
    assert "-t" not in argv and "-F" not in argv
    assert f"ControlPath={tmp_path / paths.SSH_SOCK}" in argv
    assert "User=alice" in argv and "SendEnv=COLORTERM" in argv
    assert argv[-3:] == ["127.0.0.1", "--", "x"]


# --- the verb, with exec captured ---------------------------------------------------------------

@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    inst = paths.instance_dir("dev")
    inst.mkdir(parents=True)
    (inst / paths.LIMA_YAML).write_text("images: []\n")
    (inst / paths.SSH_CONFIG).write_text("Host lima-dev\n")
    monkeypatch.setattr(shell_mod, "ssh_port", lambda name, inst_dir: 40022)
    monkeypatch.setattr(shell_mod, "ensure_running", lambda *args: None)
    monkeypatch.setattr(shell_mod, "_mounts", lambda name: [("/host/proj", "/guest/proj")])
    monkeypatch.setattr(shell_mod, "_host_cwd", lambda: "/host/proj/sub")
    monkeypatch.setattr(shell_mod, "run_ssh_child",
                        lambda argv: (calls.append(argv), (0, False))[1])
    monkeypatch.delenv("LIMA_SHELL", raising=False)
    monkeypatch.delenv("LIMA_WORKDIR", raising=False)
    monkeypatch.delenv("COLORTERM", raising=False)
    return calls


def test_verb_passes_command_through(captured: list[list[str]]) -> None:
    result = CliRunner().invoke(shell_mod.shell, ["dev", "ls", "-la", "--color"])
    assert result.exit_code == 0, result.output
    (argv,) = captured
    assert "-t" not in argv  # CliRunner's stdin/stdout are not terminals
    assert argv[-1] == "cd /guest/proj/sub || cd ~ ; exec \"$SHELL\" -l -c 'ls -la --color'"


def test_verb_double_dash_and_tty_flag(captured: list[list[str]]) -> None:
    # Lima's --tty is about questions (start a stopped instance?), not ssh's -t.
    result = CliRunner().invoke(shell_mod.shell, ["--tty", "dev", "--", "uname", "-a"])
    assert result.exit_code == 0, result.output
    (argv,) = captured
    assert "-t" not in argv
    assert argv[-1].endswith("-c 'uname -a'")


def test_verb_ignores_lima_shell_and_workdir(captured: list[list[str]]) -> None:
    # As in Lima, only the `lima` wrapper reads LIMA_SHELL and LIMA_WORKDIR.
    env = {"LIMA_SHELL": "/bin/sh", "LIMA_WORKDIR": "/tmp"}
    result = CliRunner().invoke(shell_mod.shell, ["dev", "pwd"], env=env)
    assert result.exit_code == 0, result.output
    assert captured[0][-1] == "cd /guest/proj/sub || cd ~ ; exec \"$SHELL\" -l -c pwd"


def test_verb_options_beat_environment(captured: list[list[str]]) -> None:
    env = {"LIMA_SHELL": "/bin/sh", "LIMA_WORKDIR": "/tmp"}
    result = CliRunner().invoke(
        shell_mod.shell, ["--shell", "/bin/bash", "--workdir", "/w", "dev"], env=env
    )
    assert result.exit_code == 0, result.output
    assert captured[0][-1] == "cd /w || exit 1 ; exec /bin/bash -l"


def test_not_running_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = paths.instance_dir("dev")
    inst.mkdir(parents=True)
    (inst / paths.LIMA_YAML).write_text("images: []\n")
    with pytest.raises(LimaError, match="instance dev is not running; run `limactl start dev`"):
        shell_mod.ssh_port("dev", inst)


def test_missing_instance(capsys: pytest.CaptureFixture[str]) -> None:
    from lima.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["shell", "nope", "true"])
    assert exc.value.code == 1
    assert "does not exist" in capsys.readouterr().err
