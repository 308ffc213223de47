"""lima.godur (Go durations for --timeout) and lima.goparse (Go's strconv for flags)."""

from __future__ import annotations

import pytest

from lima import goparse
from lima.errors import LimaError
from lima.godur import DURATION, format_duration, parse_duration, parse_go_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, seconds", [
    ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90), ("0", 0), ("300ms", 0.3),
    ("1m30.5s", 90.5), (".5m", 30), ("-5s", -5), ("+2m", 120), ("1\u00b5s", 1e-6),
    ("2us", 2e-6), ("100ns", 1e-7),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, error", [
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
    ("10", 'time: missing unit in duration "10"'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("1h-1m", 'time: unknown unit "h-" in duration "1h-1m"'),
    (".s", 'time: invalid duration ".s"'),
])
def test_go_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == error


def test_bare_numbers_are_seconds_in_limapy() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1.5") == 1.5


def test_click_type_gives_pflags_error() -> None:
    assert DURATION.convert("2m", None, None) == 120
    with pytest.raises(LimaError) as info:
        DURATION.convert("soon", None, None)
    assert str(info.value) == ('invalid argument "soon" for "--timeout" flag: time: invalid '
                               'duration "soon"')


def test_format_duration() -> None:
    assert [format_duration(s) for s in (600, 5400, 1.5, 0, 61)] == [
        "10m0s", "1h30m0s", "1.5s", "0s", "1m1s"]


def test_strconv() -> None:
    assert goparse.parse_int("0x1f") == 31 and goparse.parse_int("-0b11") == -3
    assert goparse.parse_uint("65535", 16) == 65535
    with pytest.raises(ValueError, match=r'strconv\.ParseUint: parsing "-1": invalid syntax'):
        goparse.parse_uint("-1", 16)
    assert goparse.format_float32(goparse.parse_float32("0.1")) == "0.1"
    assert goparse.format_float32(goparse.parse_float32("1e-5")) == "1e-05"
    with pytest.raises(ValueError, match="value out of range"):
        goparse.parse_float32("1e40")
    assert goparse.parse_bool("T") is True and goparse.parse_bool("0") is False
    assert goparse.parse_ip("::ffff:1.2.3.4") == "1.2.3.4"
    assert goparse.quote('a"b') == '"a\\"b"' and goparse.backquote("x") == "`x`"
