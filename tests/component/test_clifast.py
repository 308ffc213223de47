"""lima.clifast answers `limactl --help` and plain `limactl list` without importing click:
each form it takes gives the same stdout, stderr and exit code as the click path
(lima.cli._run_click), and every other form is left to click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lima import cli, clifast, helpfast

Cap = pytest.CaptureFixture[str]


def both(args: list[str], capsys: Cap) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """(fast, click): exit code, stdout, stderr of each path."""
    results = []
    for run in (clifast.run, cli._run_click):
        try:
            code = run(args)
        except SystemExit as exc:  # (the error paths are lima.cli.main's, shared)
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:
            code = f"{type(exc).__name__}: {exc}"  # type: ignore[assignment]
        out, err = capsys.readouterr()
        assert code is not None, args
        results.append((code, out, err))
    return results[0], results[1]


@pytest.fixture
def home(_isolated_home: Path, tmp_path: Path) -> Path:
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"")
    for i, name in enumerate(("foo", "bar", "baz"), 1):
        d = _isolated_home / name
        d.mkdir()
        (d / "lima.yaml").write_text(
            f"images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: {i}\n"
            f"memory: 512MiB\ndisk: {i}GiB\nmounts: []\nenv:\n  A: b\nmessage: hi\n")
    (_isolated_home / "broken").mkdir()  # no lima.yaml: listed as Broken, with a warning
    (_isolated_home / "bad").mkdir()
    (_isolated_home / "bad" / "lima.yaml").write_text("cpus: [\n")
    return _isolated_home


@pytest.mark.parametrize("args", [
    ["list"], ["ls"], ["list", "-q"], ["ls", "--quiet", "foo", "bar"], ["list", "--json"],
    ["list", "--json", "baz", "foo"], ["list", "--all-fields"], ["list", "-w"],
    ["list", "--wide", "foo"], ["list", "foo", "nope", "bar"], ["list", "-q", "nope"],
    ["list", "--json", "-q"], ["list", "--wide", "--json"], ["list", "Bad Name"],
    ["list", "broken", "bad"], ["ls", "-q", "-q", "foo"]])
def test_list_fast_path_is_the_click_path(args: list[str], home: Path, capsys: Cap) -> None:
    fast, slow = both(args, capsys)
    assert fast == slow


def test_list_fast_path_with_no_instances(_isolated_home: Path, capsys: Cap) -> None:
    fast, slow = both(["list"], capsys)
    assert fast == slow == (0, "", "No instance found. Run `limactl create` to create an "
                                    "instance.\n")


@pytest.mark.parametrize("args", [
    ["list", "--format", "json"], ["list", "--yq", ".name"], ["list", "--debug"],
    ["list", "--tty=false"], ["list", "--", "foo"], ["list", "-qw"], ["list", "-"],
    ["list", "--help"], ["--debug", "list"], ["info"], ["--help", "list"], ["-hv"], []])
def test_other_forms_are_left_to_click(args: list[str], _isolated_home: Path) -> None:
    assert clifast.run(args) is None


@pytest.mark.parametrize("columns", ["20", "50", "60", "72", "80", "81", "82", "100", "300",
                                     "", "junk"])
def test_help_is_clicks_page(columns: str, monkeypatch: pytest.MonkeyPatch,
                             capsys: Cap) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    fast, slow = both(["--help"], capsys)
    assert fast == slow and fast[0] == 0 and fast[1].startswith("Usage: limactl")
    assert both(["-h"], capsys)[0] == fast


def test_help_falls_back_to_click_for_a_verb_without_short_help(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.VERBS, "newverb", "info:info")
    assert helpfast.print_root_help() is None


def test_short_help_shortens_as_click_does() -> None:
    import click

    for text in cli.SHORT_HELP.values():
        for limit in range(2, 100, 3):
            assert helpfast.short_help(text, limit) == \
                click.Command("x", help=text).get_short_help_str(limit), (text, limit)


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "-q"]])
def test_fast_paths_import_no_click(args: list[str], _isolated_home: Path) -> None:
    probe = ("import sys\nfrom lima.cli import main\ntry:\n    main(sys.argv[1:])\n"
             "finally:\n    print('CLICK' if 'click' in sys.modules else 'NO-CLICK',"
             " file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "NO-CLICK"


def test_help_lists_plugins_as_click_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: Cap) -> None:
    for name, desc in (("hello", "Say hello to the guest, at some length so it wraps"),
                       ("quiet", ""), ("url-hidden", "never shown")):
        plugin = tmp_path / f"limactl-{name}"
        plugin.write_text(f"#!/bin/sh\n# <limactl-desc>{desc}</limactl-desc>\n" if desc
                          else "#!/bin/sh\n")
        plugin.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("COLUMNS", "60")
    fast, slow = both(["--help"], capsys)
    assert fast == slow
    assert "Available Plugins (Experimental):\n  hello" in fast[1] and "url-hidden" not in fast[1]


@pytest.mark.parametrize("args", [["list", "--json"], ["list"], ["list", "-q"]])
def test_list_fast_path_for_a_terminal_is_the_click_path(
        args: list[str], home: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    monkeypatch.setenv("_LIMA_OUTPUT_IS_TTY", "1")  # Lima's switch: output as for a terminal
    fast, slow = both(args, capsys)
    assert fast == slow
