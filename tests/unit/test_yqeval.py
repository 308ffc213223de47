"""lima.yqeval: yq expressions (as Lima's edit flags write them) on plain data."""

from __future__ import annotations

import pytest

from lima.errors import LimaError
from lima.yqeval import evaluate, evaluate_all

pytestmark = pytest.mark.unit


def test_set_append_and_delete() -> None:
    data = {"cpus": 2, "mounts": [{"location": "~"}], "video": {"display": "none"}}
    out = evaluate('.cpus = 4 | .mounts += [{"location": "/tmp/lima", "writable": true}]'
                   ' | del(.video)', data)
    assert out == {"cpus": 4, "mounts": [{"location": "~"},
                                         {"location": "/tmp/lima", "writable": True}]}
    assert data["cpus"] == 2  # the input is not changed


def test_unique_by_as_lima_writes_mount_flags() -> None:
    data = {"mounts": [{"location": "~"}]}
    out = evaluate('.mounts += [{"location": "~"}] | .mounts |= unique_by(.location)', data)
    assert out == {"mounts": [{"location": "~"}]}


def test_all_results_and_empty() -> None:
    assert evaluate_all(".[] | .name", [{"name": "a"}, {"name": "b"}]) == ["a", "b"]
    assert evaluate("empty", {}) is None


@pytest.mark.parametrize("expr, word", [(".cpus = ", "parse"), ('.a | error("boom")', "evaluate")])
def test_bad_expression_is_a_lima_error(expr: str, word: str) -> None:
    with pytest.raises(LimaError) as info:
        evaluate(expr, {"a": 1})
    assert word in str(info.value) and expr in str(info.value)


@pytest.mark.parametrize("expr", [".home = env.HOME", ".home = $ENV.HOME", '.x = ($ENV | length)'])
def test_the_environment_is_out_of_reach(expr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/secret")
    try:
        out = evaluate(expr, {})
    except LimaError as exc:
        assert "env operations have been disabled" in str(exc)
    else:
        assert "/home/secret" not in str(out) and out in ({"home": None}, {"x": 0})


def test_modules_cannot_be_loaded() -> None:
    with pytest.raises(LimaError, match="parse"):
        evaluate('include "x"; .', {})
