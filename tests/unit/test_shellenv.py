"""lima.shellenv: which variables `limactl shell --preserve-env` passes (Lima's rules, the
cases of Lima's hack/bats/tests/preserve-env.bats as pure-function checks)."""

from __future__ import annotations

import pytest

from lima.shellenv import DEFAULT_BLOCK_LIST, PatternError, matches, parse_list, preserved


def names(environ: dict[str, str]) -> set[str]:
    return {kv.split("=", 1)[0] for kv in preserved(environ)}


BASE = {"PATH": "/usr/bin", "HOME": "/home/u", "SSH_AUTH_SOCK": "/s", "TERM": "xterm",
        "XDG_RUNTIME_DIR": "/run", "BASH_ENV": "x", "_": "/usr/bin/env", "LD_PRELOAD": "l",
        "ZSH_NAME": "z", "FOO": "foo"}


def test_default_block_list_is_limas() -> None:
    assert len(DEFAULT_BLOCK_LIST) == 27
    assert {"PATH", "SSH_*", "USER", "HOME", "_*", "XDG_*"} <= set(DEFAULT_BLOCK_LIST)


def test_builtin_block_list_when_unset() -> None:
    assert names(BASE) == {"FOO"}


def test_values_kept_whole_and_in_order() -> None:
    env = {"B": "x=y z", "A": "", "PATH": "/bin"}
    assert preserved(env) == ["B=x=y z", "A="]


def test_custom_block_list_replaces_builtin() -> None:
    env = {"LIMA_SHELLENV_BLOCK": "FOO", "FOO": "foo", "SSH_FOO": "foo"}
    assert names(env) == {"LIMA_SHELLENV_BLOCK", "SSH_FOO"}


def test_plus_extends_builtin() -> None:
    env = {"LIMA_SHELLENV_BLOCK": "+FOO", "FOO": "foo", "SSH_FOO": "foo", "BAR": "b"}
    assert names(env) == {"LIMA_SHELLENV_BLOCK", "BAR"}


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("FOO*", "FOO", True), ("FOO*", "FOOBAR", True), ("FOO*", "BARFOO", False),
    ("*FOO", "BARFOO", True), ("*FOO", "FOOX", False),
    ("*FOO*BAR*", "FOOBAR", True), ("*FOO*BAR*", "XFOOYBARZDOTCOM", True),
    ("*FOO*BAR*", "FOOBAZ", False), ("*FOO*BAR*", "BAZBAR", False), ("*FOO*BAR*", "FOO", False),
    ("FOO", "FOO", True), ("FOO", "FOOX", False), ("_*", "_", True),
])
def test_wildcards_anywhere(pattern: str, name: str, expected: bool) -> None:
    assert matches(name, pattern) is expected


def test_lists_split_on_commas_whitespace_ignored() -> None:
    assert parse_list("FOO*, , BAR") == ["FOO*", "BAR"]
    env = {"LIMA_SHELLENV_BLOCK": "FOO*, , BAR", "FOO": "1", "FOOBAR": "2", "BAR": "3",
           "BARBAZ": "4"}
    assert names(env) == {"LIMA_SHELLENV_BLOCK", "BARBAZ"}


def test_allow_list_beats_the_block_list() -> None:
    env = {"LIMA_SHELLENV_ALLOW": "SSH_FOO, , BAR*, LD_UID", "SSH_FOO": "a", "SSH_BAR": "b",
           "BAR": "c", "BARBAZ": "d", "LD_UID": "e", "SSH_BLOCK": "f"}
    assert names(env) == {"LIMA_SHELLENV_ALLOW", "SSH_FOO", "BAR", "BARBAZ", "LD_UID"}


def test_allow_wildcards_with_extended_block() -> None:
    env = {"LIMA_SHELLENV_ALLOW": "SSH_*,CUSTOM*", "LIMA_SHELLENV_BLOCK": "+*TOKEN",
           "SSH_AUTH_SOCK": "s", "CUSTOM_VAR": "c", "MY_TOKEN": "t", "UNRELATED": "u"}
    assert names(env) == {"LIMA_SHELLENV_ALLOW", "LIMA_SHELLENV_BLOCK", "SSH_AUTH_SOCK",
                          "CUSTOM_VAR", "UNRELATED"}


@pytest.mark.parametrize(("var", "value", "message"), [
    ("LIMA_SHELLENV_BLOCK", "FOO-BAR", "Invalid LIMA_SHELLENV_BLOCK pattern: pattern "
     "`FOO-BAR` contains invalid character `-` at position 3"),
    ("LIMA_SHELLENV_BLOCK", "+A,B.C", "pattern `B.C` contains invalid character `.`"),
    ("LIMA_SHELLENV_ALLOW", "OK,?X", "Invalid LIMA_SHELLENV_ALLOW pattern: pattern `?X`"),
])
def test_invalid_characters_are_refused(var: str, value: str, message: str) -> None:
    with pytest.raises(PatternError, match=None) as exc:
        preserved({var: value, "FOO": "x"})
    assert message in str(exc.value)
