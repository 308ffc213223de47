"""lima.commands.listcache: `limactl list` reads each lima.yaml's facts from
`$LIMA_HOME/_cache/list.json` while nothing they depend on changed, and resolves the
document again when something did. Through the real CLI entry point."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest

from lima import schemas
from lima.commands import listcache
from lima.schemas.hostfacts import HostFacts
from tests.component.cli import run_cli


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listcache, "RACY_NS", 0)  # files written here are cached at once


@pytest.fixture
def home(_isolated_home: Path, tmp_path: Path) -> Path:
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"")
    for name in ("a", "b"):
        (_isolated_home / name).mkdir()
        (_isolated_home / name / "lima.yaml").write_text(
            f"images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
            "memory: 512MiB\ndisk: 1GiB\nmounts: []\n")
    return _isolated_home


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names lima.schemas.load_instance was called for (it still runs)."""
    calls: list[str] = []
    real = schemas.load_instance

    def counting(name: str) -> schemas.Resolved:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(schemas, "load_instance", counting)
    return calls


def test_second_list_reads_the_cache_and_prints_the_same(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, first, _ = run_cli(["list", "--json"], capsys)
    assert code == 0 and loads == ["a", "b"]
    cache = home / "_cache" / "list.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    code, second, _ = run_cli(["list", "--json"], capsys)
    assert (code, second) == (0, first)
    assert loads == ["a", "b"]  # nothing resolved again


def test_an_edited_lima_yaml_is_read_again(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(["list"], capsys)
    f = home / "a" / "lima.yaml"
    f.write_text(f.read_text().replace("memory: 512MiB", "memory: 1024MiB"))
    code, out, _ = run_cli(["list", "--format", "{{.Name}} {{.Memory}}"], capsys)
    assert (code, out) == (0, f"a {1024**3}\nb {512 * 1024**2}\n")
    assert loads == ["a", "b", "a"]
    f.write_text(f.read_text().replace("cpus: 1", "cpus: -1"))
    code, out, _ = run_cli(["list", "--format", "{{.Name}} {{.Status}}", "a"], capsys)
    assert out == "a Broken\n"


def test_a_changed_host_or_garbage_cache_resolves_again(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli(["list"], capsys)
    monkeypatch.setenv("TMPDIR", "/elsewhere")  # a host fact the defaults read
    run_cli(["list"], capsys)
    assert loads == ["a", "b", "a", "b"]
    (home / "_cache" / "list.json").write_text("{not json")
    code, out, _ = run_cli(["list", "-f", "{{.Name}}"], capsys)
    assert (code, out, loads[4:]) == (0, "a\nb\n", ["a", "b"])
    assert json.loads((home / "_cache" / "list.json").read_text())["entries"].keys() == {
        "a", "b"}


def test_a_document_naming_other_files_is_never_cached(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "p.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    f = home / "b" / "lima.yaml"
    f.write_text(f.read_text() + f"provision:\n- mode: system\n  file: {script}\n")
    run_cli(["list"], capsys)
    run_cli(["list"], capsys)
    assert loads == ["a", "b", "b"]


def test_a_file_changed_just_now_is_not_cached(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listcache, "RACY_NS", 60 * 10**9)
    run_cli(["list"], capsys)
    run_cli(["list"], capsys)
    assert loads == ["a", "b", "a", "b"]


def test_the_key_covers_every_host_fact() -> None:
    assert set(listcache.HOST_INPUTS) == {f.name for f in dataclasses.fields(HostFacts)}


def test_a_cache_dir_that_is_not_ours_is_left_alone(
    home: Path, loads: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_cli(["list"], capsys)  # a valid cache, moved behind a symlink: not read
    (home / "_cache").rename(elsewhere / "c")
    (home / "_cache").symlink_to(elsewhere / "c")
    loads.clear()
    for _ in range(2):
        code, out, _ = run_cli(["list", "-f", "{{.Name}}"], capsys)
        assert (code, out) == (0, "a\nb\n")
    assert [p.name for p in (elsewhere / "c").iterdir()] == ["list.json"]
    assert loads == ["a", "b", "a", "b"]
