"""`limactl shell` flags as Lima parses them (lima.commands.shell_args), the `lima`
wrapper's argv (lima.cli.lima_args), and the verb's handling of a stopped or missing
instance, `--start`, `--reconnect` and `--preserve-env` (ssh and the start path stubbed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lima import paths
from lima.cli import lima_args
from lima.commands import shell as shell_mod
from lima.commands.shell import remote_script
from lima.commands.shell_args import UsageError, parse, parse_flags

# --- the parser (pflag's rules, interspersed arguments off) ------------------------------------


def test_flags_stop_at_the_instance() -> None:
    p = parse(["--workdir", "/w", "--preserve-env", "dev", "--start", "ls", "-l"])
    assert p.flags == {"workdir": "/w", "preserve-env": True}
    assert (p.instance, p.command) == ("dev", ["--start", "ls", "-l"])


def test_bool_flags_take_a_value_only_after_equals() -> None:
    assert parse_flags(["--start=false", "--tty=0", "--reconnect=T", "x"]) == (
        {"start": False, "tty": False, "reconnect": True}, ["x"])
    # `--start false`: "false" is the instance name, as pflag reads it
    assert parse(["--start", "false"]).instance == "false"


def test_string_flags_with_equals_or_next_word() -> None:
    assert parse_flags(["--shell=/bin/sh", "--workdir", "--odd", "dev"]) == (
        {"shell": "/bin/sh", "workdir": "--odd"}, ["dev"])


def test_later_flag_wins() -> None:
    assert parse(["--shell", "/a", "--shell", "/b", "dev"]).flags["shell"] == "/b"


@pytest.mark.parametrize(("argv", "message"), [
    (["--nonexistent-flag", "dev"], "unknown flag: --nonexistent-flag"),
    (["--instance", "dev", "--nonexistent-flag"], "unknown flag: --nonexistent-flag"),
    (["-x", "dev"], "unknown shorthand flag: 'x' in -x"),
    (["-yq", "dev"], "unknown shorthand flag: 'q' in -yq"),
    (["--workdir"], "flag needs an argument: --workdir"),
    (["--start=maybe", "dev"], 'invalid argument "maybe" for "--start" flag: '
                               'strconv.ParseBool: parsing "maybe": invalid syntax'),
    ([], "requires instance name as first argument"),
    (["--tty=false"], "requires instance name as first argument"),
])
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse(argv)
    assert str(exc.value) == message
    assert exc.value.exit_code == 1


def test_double_dash_ends_flags() -> None:
    p = parse(["--instance", "dev", "--", "--nonexistent-flag"])
    assert (p.instance, p.command) == ("dev", ["--nonexistent-flag"])
    p = parse(["dev", "--", "--nonexistent-flag"])
    assert (p.instance, p.command) == ("dev", ["--nonexistent-flag"])
    # only right after the instance: later ones belong to the command
    assert parse(["dev", "ls", "--", "x"]).command == ["ls", "--", "x"]
    assert parse(["--", "--dev"]).instance == "--dev"


def test_instance_flag_makes_every_word_the_command() -> None:
    p = parse(["--instance", "dev", "uname", "-a"])
    assert (p.instance, p.command) == ("dev", ["uname", "-a"])


def test_shorthands() -> None:
    assert parse(["-y", "dev"]).flags == {"yes": True}
    assert parse(["-h"]).flags == {"help": True}


# --- the lima wrapper ----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], {}, ["shell", "--instance", "default"]),
    (["uname", "-a"], {"LIMA_INSTANCE": "dev"}, ["shell", "--instance", "dev", "uname", "-a"]),
    (["ls"], {"LIMA_INSTANCE": ""}, ["shell", "--instance", "default", "ls"]),
    (["--preserve-env", "env"], {"LIMA_SHELL": "/bin/sh", "LIMA_WORKDIR": "/tmp"},
     ["shell", "--workdir", "/tmp", "--shell", "/bin/sh", "--instance", "default",
      "--preserve-env", "env"]),
    (["--version"], {"LIMA_INSTANCE": "dev"}, ["--version"]),
    (["-v"], {}, ["-v"]),
    (["--version", "x"], {}, ["shell", "--instance", "default", "--version", "x"]),
])
def test_lima_args(args: list[str], env: dict[str, str], expected: list[str]) -> None:
    assert lima_args(args, env) == expected


def test_lima_flag_beats_lima_shell() -> None:
    p = parse(lima_args(["--shell", "/bin/zsh"], {"LIMA_SHELL": "/bin/sh"})[1:])
    assert (p.flags["shell"], p.instance, p.command) == ("/bin/zsh", "default", [])


# --- the remote script with --preserve-env -------------------------------------------------------


def test_preserved_variables_are_set_with_env_for_the_login_shell() -> None:
    script = remote_script(["printenv", "FOO"], workdir="/w", env=["FOO=a b", "BAR=x"])
    assert script == "cd /w || exit 1 ; exec env 'FOO=a b' BAR=x \"$SHELL\" -l -c 'printenv FOO'"


def test_no_env_word_without_variables() -> None:
    assert remote_script([], env=[]) == 'exec "$SHELL" -l'


# --- the verb ------------------------------------------------------------------------------------


@pytest.fixture
def dev(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Instance `dev`; its status, the start path and ssh are stubbed and recorded."""
    from lima.drivers import store

    inst = paths.instance_dir("dev")
    inst.mkdir(parents=True)
    (inst / paths.LIMA_YAML).write_text("images: []\n")
    (inst / paths.SSH_CONFIG).write_text("Host lima-dev\n")
    state: dict[str, object] = {"status": store.STATUS_RUNNING, "started": 0, "argv": None,
                                "exited": 0}

    def inspect(name: str, inst_dir: Path) -> store.Inspection:
        return store.Inspection(name=name, dir=inst_dir, status=str(state["status"]))

    def start(name: str) -> None:
        state["started"] = int(str(state["started"])) + 1
        state["status"] = store.STATUS_RUNNING

    monkeypatch.setattr(store, "inspect_processes", inspect)
    monkeypatch.setattr(shell_mod, "start_instance", start)
    monkeypatch.setattr(shell_mod, "ssh_port", lambda name, inst_dir: 40022)
    monkeypatch.setattr(shell_mod, "_mounts", lambda name: [])
    monkeypatch.setattr(shell_mod, "run_ssh_child",
                        lambda argv: (state.__setitem__("argv", list(argv)), (0, False))[1])
    monkeypatch.setattr(shell_mod, "exit_master",
                        lambda name, d, port: state.__setitem__("exited", port))
    return state


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(shell_mod.shell, args, env=env)
    return result.exit_code, f"{result.output}{result.exception or ''}"


def test_stopped_instance_is_refused_as_lima_says(dev: dict[str, object]) -> None:
    dev["status"] = "Stopped"
    code, out = invoke(["--tty=false", "dev", "true"])
    assert code == 1
    assert "instance `dev` is stopped, run `limactl start dev` to start the instance" in out
    assert dev["argv"] is None and dev["started"] == 0


def test_start_flag_starts_then_connects(dev: dict[str, object]) -> None:
    dev["status"] = "Stopped"
    code, out = invoke(["--start", "dev", "true"])
    assert code == 0, out
    assert dev["started"] == 1 and dev["argv"] is not None


def test_start_false_with_tty_does_not_ask(dev: dict[str, object]) -> None:
    dev["status"] = "Stopped"
    code, out = invoke(["--tty", "--start=false", "dev"])
    assert code == 1 and "is stopped" in out and dev["started"] == 0


def test_tty_without_a_terminal_on_stdin_does_not_ask(dev: dict[str, object]) -> None:
    dev["status"] = "Stopped"
    code, out = invoke(["--tty=true", "dev"], )
    assert code == 1 and "is stopped" in out and "Do you want" not in out


def test_tty_asks_on_a_terminal(dev: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    dev["status"] = "Stopped"
    monkeypatch.setattr(shell_mod, "_ask_to_start", lambda: True)
    code, out = invoke(["--tty", "dev", "true"])
    assert code == 0, out
    assert dev["started"] == 1


def test_running_instance_is_not_started(dev: dict[str, object]) -> None:
    code, out = invoke(["--start", "dev", "true"])
    assert code == 0, out
    assert dev["started"] == 0


def test_missing_instance_as_lima_says(dev: dict[str, object]) -> None:
    code, out = invoke(["--instance", "nope"])
    assert code == 1
    assert ("instance `nope` does not exist, run `limactl create nope` to create a new "
            "instance") in out


def test_reconnect_ends_the_master_first(dev: dict[str, object]) -> None:
    code, out = invoke(["--reconnect", "dev", "true"])
    assert code == 0, out
    assert dev["exited"] == 40022


def test_preserve_env_reaches_the_remote_command(dev: dict[str, object]) -> None:
    env = {"FOO": "foo bar", "SSH_FOO": "x", "LIMA_SHELLENV_BLOCK": "+LIMA_*"}
    code, out = invoke(["--preserve-env", "--workdir", "/tmp", "dev", "printenv"], env)
    assert code == 0, out
    script = dev["argv"][-1]  # type: ignore[index]
    assert script.startswith("cd /tmp || exit 1 ; exec env ")
    assert "'FOO=foo bar'" in script and "SSH_FOO" not in script
    words = shlex.split(script)
    assert "LIMA_SHELLENV_BLOCK=+LIMA_*" not in words
    assert not [w for w in words if w.startswith(("PATH=", "HOME=", "LIMA_HOME="))]


def test_invalid_pattern_is_an_error(dev: dict[str, object]) -> None:
    code, out = invoke(["--preserve-env", "dev"], {"LIMA_SHELLENV_BLOCK": "FOO-BAR"})
    assert code == 1 and "Invalid LIMA_SHELLENV_BLOCK pattern" in out
    assert dev["argv"] is None


def test_tty_and_yes_together_are_refused(dev: dict[str, object]) -> None:
    code, out = invoke(["--tty", "-y", "dev"])
    assert code == 1 and "cannot use both --tty and --yes flags at the same time" in out


def test_sync_is_refused_not_ignored(dev: dict[str, object]) -> None:
    code, out = invoke(["--sync", ".", "dev"])
    assert code == 1 and "--sync is not supported" in out and dev["argv"] is None
    assert "limactl copy -r DIR INSTANCE:DIR" in out


def test_help() -> None:
    code, out = invoke(["--help"])
    assert code == 0 and "limactl shell [flags] INSTANCE [COMMAND...]" in out
    assert "LIMA_SHELLENV_BLOCK" in out
