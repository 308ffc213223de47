"""mode: yq: the expression subset compiled on the host (lima.schemas.yqexpr) and the guest
helper that applies it (lima/assets/cidata/util/lima-yq, run here with the host's python3)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lima.drivers import cidata
from lima.schemas.yqexpr import YqError, compile_expression, program_json, resolve_format

HELPER = cidata.ASSETS / "util" / "lima-yq"


def _ops(text: str) -> list[dict[str, object]]:
    result: list[dict[str, object]] = json.loads(program_json(compile_expression(text)))
    return result


def test_the_expressions_of_limas_templates() -> None:
    # docker.yaml, docker-rootful.yaml and default.yaml of Lima 2.2.
    assert _ops(".features.cdi = true |\n.features.containerd-snapshotter = false\n") == [
        {"op": "set", "path": ["features", "cdi"], "value": True},
        {"op": "set", "path": ["features", "containerd-snapshotter"], "value": False}]
    assert _ops('.Socket.SocketUser="lima"') == [
        {"op": "set", "path": ["Socket", "SocketUser"], "value": "lima"}]


def test_append_delete_quoted_keys_and_indexes() -> None:
    assert _ops('.a += [1, "x|y"] | del(.b[0]) | .["k s"].c = {x: 1} | ."d.e" = null') == [
        {"op": "add", "path": ["a"], "value": [1, "x|y"]},
        {"op": "del", "path": ["b", 0]},
        {"op": "set", "path": ["k s", "c"], "value": {"x": 1}},
        {"op": "set", "path": ["d.e"], "value": None}]


@pytest.mark.parametrize(("text", "fragment"), [
    (". = 1", "whole document"),
    (".a = .b", "only literal values"),
    (".a == 1", "expected `=` or `+=`"),
    ("a = 1", "starting with `.`"),
    (".a = ", "expected a value"),
    (".a = 1 | ", "starting with `.`"),
    (".a = to_entries(.b)", "only literal values"),
])
def test_outside_the_subset_is_refused_with_where(text: str, fragment: str) -> None:
    with pytest.raises(YqError, match="character") as exc:
        compile_expression(text)
    assert fragment in str(exc.value)


def test_formats_as_lima_picks_them() -> None:
    assert resolve_format("auto", "/x/daemon.json") == "json"
    assert resolve_format(None, "/x/a.yml") == "yaml"
    assert resolve_format("auto", "/x/override.conf") == "yaml"  # Lima: unknown -> yaml
    assert resolve_format("ini", "/x/override.conf") == "ini"
    for bad in ("toml", "xml", "csv", "props", "tsv"):
        with pytest.raises(YqError, match=f'"{bad}" is not supported'):
            resolve_format(bad, "/x/a")


# -- the guest helper ------------------------------------------------------------------------



def _apply(tmp: Path, expression: str, target: Path, fmt: str,
           perms: str = "640") -> subprocess.CompletedProcess[str]:
    prog = tmp / "prog.json"
    prog.write_text(program_json(compile_expression(expression)))
    owner = pwd.getpwuid(os.getuid()).pw_name
    return subprocess.run([sys.executable, str(HELPER), str(prog), str(target), fmt, owner,
                           perms], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.processes
def test_helper_creates_json_with_dirs_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "daemon.json"
    res = _apply(tmp_path, ".features.cdi = true | .list += [1] | .list += [2]", target, "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(target.read_text()) == {"features": {"cdi": True}, "list": [1, 2]}
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.processes
def test_helper_updates_yaml_and_ini_in_place(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("keep: 1\nitems: [a]\ngone: x\n")
    res = _apply(tmp_path, '.items += ["b"] | del(.gone) | .n.m = "v"', y, "yaml")
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(y.read_text()) == {"keep": 1, "items": ["a", "b"], "n": {"m": "v"}}
    ini = tmp_path / "override.conf"
    ini.write_text("[Unit]\nDescription=x\n")
    res = _apply(tmp_path, '.Socket.SocketUser="lima"', ini, "ini")
    assert res.returncode == 0, res.stderr
    assert ini.read_text() == "[Unit]\nDescription=x\n\n[Socket]\nSocketUser=lima\n\n"


@pytest.mark.processes
def test_helper_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = _apply(tmp_path, ".a = 1", bad, "json")
    assert res.returncode == 1
    assert f"lima-yq: {bad} is not valid json" in res.stderr
    assert bad.read_text() == "{not json"  # untouched
    s = tmp_path / "s.json"
    s.write_text('{"a": "x"}')
    res = _apply(tmp_path, ".a += 1", s, "json")
    assert res.returncode == 1 and "cannot add a int to a str" in res.stderr
