"""Lima's global flags (cmd/limactl/main.go): found before or after the verb, parsed as
cobra parses them (`--tty=false`, `--log-level X` or `=X`), checked with Lima's messages;
and logrus' JSON lines (lima.logfmt). Pure: no processes."""

from __future__ import annotations

import json
import time

import pytest

from lima import logfmt
from lima.globalflags import GlobalFlagError, GlobalFlags, split_global_flags

pytestmark = pytest.mark.unit


def split(args: list[str], **kw: object) -> tuple[GlobalFlags, list[str]]:
    return split_global_flags(args, ("shell",), **kw)  # type: ignore[arg-type]


def test_flags_before_and_after_the_verb() -> None:
    flags, rest = split(["--debug", "list", "--log-level", "trace", "vm", "--log-format=json"])
    assert rest == ["list", "vm"]
    assert (flags.debug, flags.log_level, flags.log_format) == (True, "trace", "json")
    assert flags.given == ["debug", "log-level", "log-format"]


@pytest.mark.parametrize(("arg", "tty"), [
    ("--tty", True), ("--tty=false", False), ("--tty=0", False), ("--tty=F", False),
    ("--tty=TRUE", True), ("--tty=t", True), ("--tty=1", True)])
def test_tty_is_a_cobra_bool(arg: str, tty: bool) -> None:
    flags, rest = split(["list", arg])
    assert rest == ["list"]
    assert flags.tty is tty
    assert flags.resolved_tty(not tty) is tty  # what is given wins over the terminal


def test_tty_defaults_to_stdout_being_a_terminal_and_yes_turns_it_off() -> None:
    flags, _ = split(["list"])
    assert flags.tty is None and flags.resolved_tty(True) and not flags.resolved_tty(False)
    for yes in ("-y", "--yes", "--yes=true"):
        flags, rest = split(["delete", yes, "vm"])
        assert rest == ["delete", "vm"] and flags.resolved_tty(True) is False
    flags, _ = split(["delete", "--yes=false"])
    assert flags.yes is False and flags.resolved_tty(True) is True


def test_tty_false_as_a_separate_word_is_an_argument_as_in_cobra() -> None:
    flags, rest = split(["list", "--tty", "false"])
    assert flags.tty is True and rest == ["list", "false"]


def test_both_tty_and_yes_is_limas_error() -> None:
    for args in (["--tty", "x", "-y"], ["x", "--tty=false", "--yes"],
                 ["--yes=false", "x", "--tty"]):
        flags, _ = split(args)
        with pytest.raises(GlobalFlagError, match=r"^cannot use both --tty and --yes flags at "
                                                  "the same time$"):
            flags.check()


def test_bad_values_have_limas_messages() -> None:
    with pytest.raises(GlobalFlagError, match=r'^invalid argument "maybe" for "--tty" flag: '
                       r'strconv.ParseBool: parsing "maybe": invalid syntax$'):
        split(["list", "--tty=maybe"])
    with pytest.raises(GlobalFlagError, match=r"^flag needs an argument: --log-level$"):
        split(["list", "--log-level"])
    bad_level, _ = split(["--log-level", "loud", "list"])
    with pytest.raises(GlobalFlagError, match=r'^not a valid logrus Level: "loud"$'):
        bad_level.check()
    bad_format, _ = split(["list", "--log-format", "xml"])
    with pytest.raises(GlobalFlagError, match=r"^unsupported log-format: `xml`$"):
        bad_format.check()


@pytest.mark.parametrize(("args", "level"), [
    ([], "info"), (["--debug"], "debug"), (["--log-level=TRACE"], "trace"),
    (["--debug", "--log-level", "error"], "error"),  # --log-level wins, as in Lima
    (["--log-level", "warning"], "warn")])
def test_effective_level(args: list[str], level: str) -> None:
    flags, _ = split([*args, "list"])
    flags.check()
    assert flags.level() == level


def test_passthrough_verb_keeps_its_arguments_and_dashdash_ends_flags() -> None:
    flags, rest = split(["--debug", "shell", "--tty=false", "vm", "--debug"])
    assert rest == ["shell", "--tty=false", "vm", "--debug"] and flags.tty is None
    flags, rest = split(["create", "--", "--debug"])
    assert rest == ["create", "--", "--debug"] and not flags.debug


def test_a_verb_options_value_is_never_a_global_flag() -> None:
    # pflag gives `--set --debug` the value "--debug"
    flags, rest = split(["create", "--set", "--debug", "-y"],
                        value_options=lambda verb: {"--set"} if verb == "create" else set())
    assert rest == ["create", "--set", "--debug"] and not flags.debug and flags.yes


def test_logrus_json_line() -> None:
    when = time.mktime((2026, 11, 30, 13, 27, 29, 0, 0, -1))
    line = logfmt.json_line(logfmt.LEVELS["warn"], "a <b> & c", when, errors=["x"])
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert line.startswith('{"errors":["x"],"level":"warning","msg":"a \\u003cb\\u003e '
                           '\\u0026 c","time":"2026-11-30T13:27:29')
    data = json.loads(line)
    assert list(data) == sorted(data)  # Go marshals a map with its keys sorted
    assert data["time"] == logfmt.rfc3339(when)
    assert logfmt.rfc3339(when)[19:] in ("Z",) or logfmt.rfc3339(when)[19] in "+-"


def test_rfc3339_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert logfmt.rfc3339(0) == "1970-01-01T00:00:00Z"
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        assert logfmt.rfc3339(0) == "1970-01-01T05:30:00+05:30"
        monkeypatch.setenv("TZ", "America/New_York")
        time.tzset()
        assert logfmt.rfc3339(0) == "1969-12-31T19:00:00-05:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_warn_honours_the_format_and_level(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        logfmt.set_format("text", "info")
        logfmt.warn("plain", text="plain: more")
        logfmt.set_format("json", "warn")
        logfmt.warn("as json", errors=["e"])
        logfmt.set_format("json", "error")
        logfmt.warn("hidden")
    finally:
        logfmt.reset()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "plain: more"
    assert json.loads(err[1])["msg"] == "as json" and json.loads(err[1])["errors"] == ["e"]
    assert len(err) == 2
