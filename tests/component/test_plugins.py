"""limactl plugins (lima.plugins) through the real CLI: `limactl NAME` runs `limactl-NAME`
from PATH with its arguments untouched, PATH set as Lima sets it and its exit status
passed on; `limactl --help` lists them as Lima does; built-in verbs win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lima import plugins
from lima.cli import main

SCRIPT = """#!/bin/sh
# <limactl-desc> {desc} </limactl-desc>
printf 'argc=%s\\n' "$#"
for a in "$@"; do printf 'arg=%s\\n' "$a"; done
printf 'PATH=%s\\n' "$PATH"
printf 'LIMA_HOME=%s\\n' "$LIMA_HOME"
exit {code}
"""


def plugin(directory: Path, name: str, desc: str = "", code: int = 0, mode: int = 0o755
           ) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"limactl-{name}"
    path.write_text(SCRIPT.format(desc=desc, code=code))
    path.chmod(mode)
    return path


def run(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capfd.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def bins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    plugin(first, "hello", desc="Say hello", code=3)
    plugin(second, "hello", desc="Shadowed", code=0)
    plugin(second, "other", desc="Another one")
    plugin(second, "url-lima", desc="URL helper")
    plugin(second, "list", desc="Never run")
    plugin(second, "noexec", desc="Not executable", mode=0o644)
    (second / "limactl-dir").mkdir()
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{second}{os.pathsep}{os.environ['PATH']}")
    return first, second


def test_plugin_runs_with_raw_args_path_and_exit_status(
        bins: tuple[Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    first, second = bins
    code, out, _ = run(["--debug", "hello", "--debug", "--", "x y", "--help", "-v"], capfd)
    assert code == 3  # the first `limactl-hello` on PATH, its status passed on
    lines = out.splitlines()
    assert lines[:6] == ["argc=5", "arg=--debug", "arg=--", "arg=x y", "arg=--help",
                         "arg=-v"]
    path = next(line for line in lines if line.startswith("PATH="))[len("PATH="):]
    dirs = path.split(os.pathsep)
    # limactl's own directory first, then the PATH it was given
    assert dirs[: len(plugins.self_dirs())] == plugins.self_dirs()
    assert dirs[len(plugins.self_dirs()):][:2] == [str(first), str(second)]
    assert f"LIMA_HOME={os.environ['LIMA_HOME']}" in lines


def test_discovery_rules(bins: tuple[Path, Path]) -> None:
    found = {p.name: p for p in plugins.discover()}
    assert found["hello"].path == bins[0] / "limactl-hello"
    assert found["hello"].description == "Say hello"
    assert "noexec" not in found and "dir" not in found
    binary = bins[1] / "limactl-bin"
    binary.write_bytes(b"\x7fELF <limactl-desc>no</limactl-desc>")
    binary.chmod(0o755)
    assert {p.name: p for p in plugins.discover()}["bin"].description == ""


def test_help_lists_plugins_builtins_win(bins: tuple[Path, Path],
                                         capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capfd)
    assert code == 0
    section = out[out.index("Available Plugins (Experimental):"):]
    assert "  hello" in section and "Say hello" in section and "Another one" in section
    assert "url-lima" not in out and "Shadowed" not in out
    # a hidden url-* plugin still runs; a built-in verb is never a plugin
    code, out, _ = run(["url-lima", "a"], capfd)
    assert (code, out.splitlines()[:2]) == (0, ["argc=1", "arg=a"])
    code, out, _ = run(["list", "--json"], capfd)
    assert code == 0 and "argc=" not in out


def test_unknown_and_non_executable_are_no_commands(
        bins: tuple[Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    for name in ("noexec", "dir", "nosuch"):
        code, out, err = run([name], capfd)
        assert code != 0 and out == ""
        assert name in err
