"""Lima's global flags through the real CLI: before or after the verb, `--log-format json`
lines as logrus writes them, `--log-level` hiding warnings, `--tty`/`--yes` and the shared
`obj["tty"]` other verbs read, Lima's errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lima.cli import limactl
from tests.component.cli import run_cli

Cap = pytest.CaptureFixture[str]


def tty_seen(args: list[str]) -> object:
    """What the root command stores for the verbs in obj["tty"]."""
    ctx = limactl.make_context("limactl", [*args])
    with ctx:
        ctx.invoke(limactl.callback)  # type: ignore[arg-type]
    return ctx.obj["tty"]


@pytest.mark.parametrize(("args", "tty"), [
    (["--tty", "list"], True), (["list", "--tty=false"], False), (["-y", "list"], False),
    (["list", "--yes"], False), (["--yes=false", "list"], False),  # stdout is not a tty here
    (["list", "--tty=true"], True), (["list"], False)])
def test_tty_for_the_verbs(args: list[str], tty: bool, _isolated_home: Path) -> None:
    assert tty_seen(args) is tty


def test_tty_and_yes_together_is_limas_error(capsys: Cap, _isolated_home: Path) -> None:
    for args in (["--tty", "list", "-y"], ["list", "--tty=false", "--yes"]):
        code, out, err = run_cli(args, capsys)
        assert (code, out) == (1, "")
        assert err == "limactl: cannot use both --tty and --yes flags at the same time\n"


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--tty=nope"], 'invalid argument "nope" for "--tty" flag: '
                             'strconv.ParseBool: parsing "nope": invalid syntax'),
    (["list", "--log-level=loud"], 'not a valid logrus Level: "loud"'),
    (["--log-format", "xml", "list"], "unsupported log-format: `xml`"),
    (["list", "--log-format"], "flag needs an argument: --log-format")])
def test_bad_global_flags(args: list[str], message: str, capsys: Cap,
                          _isolated_home: Path) -> None:
    code, out, err = run_cli(args, capsys)
    assert (code, out) == (1, "")
    assert message in err


def test_json_log_lines_and_fatal(capsys: Cap, _isolated_home: Path) -> None:
    code, out, err = run_cli(["list", "nope", "--log-format=json"], capsys)
    assert (code, out) == (1, "")
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(x["level"], x["msg"]) for x in lines] == [
        ("warning", "No instance matching nope found."), ("fatal", "unmatched instances")]
    assert all(list(x) == ["level", "msg", "time"] for x in lines)
    assert all(x["time"][:4].isdigit() and x["time"][10] == "T" for x in lines)


def test_log_level_hides_warnings(capsys: Cap, _isolated_home: Path) -> None:
    code, _, err = run_cli(["list"], capsys)
    assert code == 0
    assert err == "No instance found. Run `limactl create` to create an instance.\n"
    code, _, err = run_cli(["--log-level", "error", "list"], capsys)
    assert (code, err) == (0, "")


def test_debug_after_the_verb_in_a_subprocess_as_json(tmp_path: Path,
                                                      _isolated_home: Path) -> None:
    """What a user's terminal gets: logging verbs write logrus JSON through `logging`."""
    (tmp_path / "bad.yaml").write_text("cpus: [\n")
    proc = subprocess.run([sys.executable, "-m", "lima.cli", "validate", "bad.yaml",
                           "--log-format", "json"], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    last = json.loads(proc.stderr.splitlines()[-1])
    assert last["level"] == "fatal" and "bad.yaml:2" in last["msg"]


@pytest.mark.parametrize(("verb", "warned"), [("edit", True), ("clone", True),
                                              ("rename", True), ("delete", False)])
def test_yes_is_deprecated_for_clone_edit_rename(verb: str, warned: bool,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    ctx = limactl.make_context("limactl", ["--yes", "list"])
    ctx.invoked_subcommand = verb
    with ctx:
        ctx.invoke(limactl.callback)  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records if "--yes flag is deprecated" in r.message]
    assert bool(said) is warned


def test_help_lists_the_global_flags(capsys: Cap) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for flag in ("--debug", "--log-format string", "--log-level string", "--tty",
                 "-y, --yes", "Alias of --tty=false",
                 "Set the logging level [trace, debug, info, warn, error]"):
        assert flag in out, flag


def test_a_usage_error_is_a_json_line_with_log_format_json(capsys: Cap) -> None:
    code, out, err = run_cli(["--log-format=json", "no-such-verb"], capsys)
    assert (code, out) == (1, "")
    line = json.loads(err)
    assert line["level"] == "fatal" and "no-such-verb" in line["msg"]
