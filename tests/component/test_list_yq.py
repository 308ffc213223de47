"""`limactl list --yq` and `--filter`, the cases of Lima 2.2's hack/bats/tests/list.bats
(disks 1, 2, 3 GiB here where Lima's dummy instances have 1M, 2M, 3M). Through the real
CLI entry point, on instance directories written here (no VM)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.component.cli import run_cli

GIB = 1024**3


@pytest.fixture
def home(_isolated_home: Path, tmp_path: Path) -> Path:
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"")
    for i, name in enumerate(("foo", "bar", "baz"), 1):
        d = _isolated_home / name
        d.mkdir()
        (d / "lima.yaml").write_text(
            f"images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: {i}\n"
            f"memory: 512MiB\ndisk: {i}GiB\nmounts: []\nuser:\n  uid: 4242\n")
    return _isolated_home


Cap = pytest.CaptureFixture[str]


def test_yq_implies_format_json(home: Path, capsys: Cap) -> None:
    code, out, err = run_cli(["ls", "baz", "--yq", ".config"], capsys)
    assert code == 0, err
    assert out.startswith('{"') and len(out.splitlines()) == 1
    assert json.loads(out)["disk"] == "3GiB"


def test_yq_with_format_yaml(home: Path, capsys: Cap) -> None:
    code, out, err = run_cli(["ls", "baz", "--yq", ".config", "--format", "yaml"], capsys)
    assert code == 0, err
    assert "disk: 3GiB" in out.splitlines()
    assert yaml.safe_load(out)["cpus"] == 3


def test_yq_yaml_separates_the_instances(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "foo", "bar", "--yq", "{n: .name}", "--format", "yaml"],
                           capsys)
    assert code == 0
    assert out == "n: foo\n---\nn: bar\n"


def test_yq_can_be_given_many_times(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "foo", "--yq", ".config", "--yq", ".user", "--yq", ".uid"],
                           capsys)
    assert (code, out) == (0, "4242\n")
    code, out, _ = run_cli(["ls", "--yq", f"select(.disk > {GIB})",
                            "--yq", 'select(.name | test("z"))', "--yq", ".name"], capsys)
    assert (code, out) == (0, "baz\n")  # a string scalar is printed bare, as yq prints it


def test_yq_results_are_compact_json_lines_without_empty_maps(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "foo", "bar", "--yq", "{a: {}, b: [{}, 1], n: .name}",
                            "--yq", ".n, .b"], capsys)
    assert code == 0
    assert out == 'foo\n[1]\nbar\n[1]\n'
    code, out, _ = run_cli(["ls", "foo", "--yq", "{a: {b: {}}, c: null, d: true}"], capsys)
    assert out == '{"c":null,"d":true}\n'  # until nothing changes, as Lima's loop


def test_yq_refuses_table_and_go_templates(home: Path, capsys: Cap) -> None:
    for fmt in ("table", "{{.Name}} {{.Disk}}"):
        code, out, err = run_cli(["ls", "--yq", ".name", "--format", fmt], capsys)
        assert code == 1 and out == ""
        assert "option --yq only works with --format json or yaml" in err


def test_quiet_with_yq(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "--quiet"], capsys)
    assert out.splitlines() == ["bar", "baz", "foo"]
    code, out, _ = run_cli(["ls", "--quiet", "--yq", 'select(.name == "foo")'], capsys)
    assert (code, out) == (0, "foo\n")


@pytest.mark.parametrize(("expr", "why"), [
    ("env(HOME)", "env operations have been disabled"),
    ('.name + env.HOME', "env operations have been disabled"),
    ('"\\(env.HOME)"', "env operations have been disabled"),
    ('strenv(HOME)', "env operations have been disabled"),
    ('load("/etc/passwd")', "file operations have been disabled"),
    ('import "x" as x; .', "file operations have been disabled")])
def test_yq_cannot_read_the_environment_or_files(home: Path, capsys: Cap, expr: str,
                                                 why: str) -> None:
    code, out, err = run_cli(["ls", "--yq", expr], capsys)
    assert code == 1 and out == "" and why in err
    assert "/root" not in err and "root:" not in err


def test_dollar_env_is_empty(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "foo", "--yq", "$ENV.HOME, ($ENV | length)"], capsys)
    assert (code, out) == (0, "null\n0\n")


def test_env_as_a_word_in_a_string_or_field_is_fine(home: Path, capsys: Cap) -> None:
    code, out, err = run_cli(["ls", "foo", "--yq", '.env, "env", .config.env'], capsys)
    assert (code, out) == (0, "null\nenv\nnull\n"), err


def test_filter_keeps_the_table(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "--filter", '.name == "foo"'], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("NAME") and lines[1].startswith("foo ")


def test_filter_works_with_every_format(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "--filter", '.name == "foo"', "--format", "json"], capsys)
    assert code == 0 and out.startswith('{"name":"foo",') and len(out.splitlines()) == 1
    code, out, _ = run_cli(["ls", "-l", '.name == "foo"', "--format", "{{.Name}}"], capsys)
    assert (code, out) == (0, "foo\n")
    code, out, _ = run_cli(["ls", "--filter", '.name == "foo"', "--format", "yaml"], capsys)
    assert [d["name"] for d in yaml.safe_load_all(out)] == ["foo"]


def test_filter_with_yq_and_quiet(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "--filter", '.name == "foo"', "--yq", ".name"], capsys)
    assert (code, out) == (0, "foo\n")
    code, out, _ = run_cli(["ls", "--quiet", "--filter", '.name == "foo"'], capsys)
    assert (code, out) == (0, "foo\n")
    code, out, _ = run_cli(["ls", "-q", "--filter", '.name == "kcp"'], capsys)
    assert (code, out) == (0, "")


def test_filters_are_anded(home: Path, capsys: Cap) -> None:
    code, out, _ = run_cli(["ls", "-q", "--filter", '.name == "foo"', "--filter",
                            f".disk == {2 * GIB}"], capsys)
    assert (code, out) == (0, "")
    code, out, _ = run_cli(["ls", "--filter", '.name == "foo"', "--filter",
                            f".disk == {GIB}"], capsys)
    assert out.splitlines()[1].startswith("foo ")


def test_bad_filter_is_an_error_naming_it(home: Path, capsys: Cap) -> None:
    code, out, err = run_cli(["ls", "--filter", ".name =="], capsys)
    assert code == 1 and out == ""
    assert "failed to apply filter `select(.name ==)`" in err


def test_list_fields_conflicts(home: Path, capsys: Cap) -> None:
    for flag in ("--yq", "--filter"):
        code, out, err = run_cli(["ls", "--list-fields", flag, ".name"], capsys)
        assert code == 1 and out == ""
        assert f"option --list-fields conflicts with option {flag}" in err


def test_unmatched_names_still_exit_1_with_yq(home: Path, capsys: Cap) -> None:
    code, out, err = run_cli(["ls", "foo", "nope", "--yq", ".name"], capsys)
    assert (code, out) == (1, "foo\n")
    assert "No instance matching nope found." in err and "unmatched instances" in err


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_json_on_a_terminal_is_coloured_and_the_same(home: Path, capsys: Cap,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """list.bats: 'JSON output to terminal is colorized, but semantically identical'."""
    code, plain, _ = run_cli(["ls", "foo", "bar", "--format", "json"], capsys)
    monkeypatch.setenv("_LIMA_OUTPUT_IS_TTY", "1")
    for args in (["ls", "foo", "bar", "--format", "json"], ["ls", "foo", "bar", "--json"]):
        code, colored, _ = run_cli(args, capsys)
        assert code == 0 and "\x1b[0m" in colored
        text = ANSI.sub("", colored)
        assert text.startswith('{\n    "name": "foo",\n')  # indented by 4
        docs = [json.loads(d) for d in re.split(r"(?m)^(?=\{)", text) if d]
        assert docs == [json.loads(line) for line in plain.splitlines()]
    code, out, _ = run_cli(["ls", "foo", "--yq", ".config.cpus", "--yq", "{c: .}"], capsys)
    assert json.loads(ANSI.sub("", out)) == {"c": 1} and "\x1b[0m" in out
    code, out, _ = run_cli(["ls", "foo", "--yq", ".name"], capsys)
    assert out == "foo\n"  # a bare scalar stays bare
