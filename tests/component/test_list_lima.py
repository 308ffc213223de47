"""`limactl list` as Lima 2.2 prints it (Lima's hack/bats/tests/list.bats, store.Instance,
store.FormatData): JSON Lines in Lima's key order, Go templates over Lima's field names,
--list-fields, --quiet, unmatched names, broken directories, the table. Through the real
CLI entry point, on instance directories written here (no VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.component.cli import run_cli

# Lima's Instance JSON keys in order, then FormatData's host fields.
LIMA_ORDER = ["name", "hostname", "status", "dir", "vmType", "arch", "cpus", "memory", "disk",
              "message", "additionalDisks", "network", "sshLocalPort", "sshConfigFile",
              "hostAgentPID", "driverPID", "errors", "config", "sshAddress", "protected",
              "limaVersion", "param", "autoStartedIdentifier", "HostOS", "HostArch",
              "LimaHome", "IdentityFile"]
LIMAPY_KEYS = {"phase", "conditions", "ready", "reason", "managedBy", "controllerPaused"}


@pytest.fixture
def home(_isolated_home: Path, tmp_path: Path) -> Path:
    """foo, bar, baz (disks 1, 2, 3 GiB) as `create` leaves them, with lima.yaml written
    here; foo has a param and a message."""
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"")
    for i, name in enumerate(("foo", "bar", "baz"), 1):
        d = _isolated_home / name
        d.mkdir()
        extra = ("param:\n  A: b\nprovision:\n- mode: system\n  script: echo {{.Param.A}}\n"
                 "message: |\n  hello {{.Name}}\n" if name == "foo" else "")
        (d / "lima.yaml").write_text(
            f"images:\n- location: {image}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
            f"memory: 512MiB\ndisk: {i}GiB\nmounts: []\n{extra}")
        (d / "lima-version").write_text("2.1.2\n")
    return _isolated_home


def lines(out: str) -> list[str]:
    return out.splitlines()


def test_json_lines_in_limas_key_order(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["list", "--format", "json", "foo", "bar"], capsys)
    assert code == 0, err
    assert [json.loads(line)["name"] for line in lines(out)] == ["foo", "bar"]
    first = lines(out)[0]
    assert first.startswith('{"name":"foo","hostname":"lima-foo","status":"Stopped",')
    assert ", " not in first.split('"config"')[0] and ": " not in first.split('"config"')[0]
    rec = json.loads(first)
    keys = list(rec)
    lima_keys = [k for k in keys if k not in LIMAPY_KEYS]
    assert lima_keys == [k for k in LIMA_ORDER if k in rec]  # Lima's order
    assert keys[:len(lima_keys)] == lima_keys  # limapy's own keys come after all of Lima's
    assert {"cpus": 1, "memory": 512 * 1024**2, "disk": 1024**3, "protected": False,
            "limaVersion": "2.1.2", "param": {"A": "b"}, "message": "hello foo\n",
            "HostOS": "linux", "LimaHome": str(home),
            "IdentityFile": str(home / "_config" / "user")}.items() <= rec.items()
    # omitempty: zero values left out; never an empty map (Lima's yq pass drops them)
    assert "hostAgentPID" not in rec and "sshLocalPort" not in rec and "errors" not in rec
    assert "{}" not in first


def test_json_flag_is_format_json_and_they_conflict(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, by_format, _ = run_cli(["list", "foo", "bar", "--format", "json"], capsys)
    code, by_flag, _ = run_cli(["list", "foo", "bar", "--json"], capsys)
    assert code == 0 and by_flag == by_format
    code, out, err = run_cli(["list", "--json", "--format", "json"], capsys)
    assert (code, out) == (1, "")
    assert "option --json conflicts with option --format" in err


def test_yaml_documents_hold_the_json_records(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, as_json, _ = run_cli(["list", "foo", "bar", "--format", "json"], capsys)
    code, out, _ = run_cli(["list", "foo", "bar", "--format", "yaml"], capsys)
    assert code == 0
    assert out.startswith("---\nname: foo\n")
    assert list(yaml.safe_load_all(out)) == [json.loads(x) for x in lines(as_json)]


def test_go_template_over_limas_field_names(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["list", "foo", "bar", "--format", "{{.Name}} {{.Disk}}"], capsys)
    assert (code, lines(out)) == (0, ["foo 1073741824", "bar 2147483648"])
    fmt = ("{{.Status}}|{{.SSHConfigFile}}|{{.Param.A}}|{{.Message}}|{{.CPUs}}|"
           "{{.Config.CPUs}}|{{len .Errors}}|{{.Protected}}")
    code, out, _ = run_cli(["list", "foo", "-f", fmt], capsys)
    assert out == f"Stopped|{home}/foo/ssh.config|b|hello foo|1|1|0|false\n"  # Message trimmed
    code, out, _ = run_cli(["list", "bar", "--format", "unix://{{.Dir}}/sock/docker.sock"],
                           capsys)
    assert out == f"unix://{home}/bar/sock/docker.sock\n"


def test_template_functions_json_yaml_indent_missing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, as_json, _ = run_cli(["list", "bar", "--json"], capsys)
    code, out, _ = run_cli(["list", "bar", "--format", "{{json .}}"], capsys)
    assert (code, out) == (0, as_json)
    code, out, _ = run_cli(["list", "foo", "--format", '{{json .Param}} {{missing "none" ""}}'
                            ' {{missing .Name}} {{indent 3 "a\\nb"}}'], capsys)
    assert out == '{"A":"b"} none foo    a\n   b\n'
    code, out, _ = run_cli(["list", "foo", "--format", "{{yaml .Param}}"], capsys)
    assert out == "---\nA: b\n"


def test_deprecated_host_fields_work_but_are_not_listed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["list", "--list-fields"], capsys)
    assert code == 0
    names = lines(out)
    assert names == sorted(names) and {"Name", "CPUs", "Memory", "SSHLocalPort"} <= set(names)
    assert not {"HostOS", "HostArch", "LimaHome", "IdentityFile"} & set(names)
    assert all(n[:1].isupper() and " " not in n for n in names)
    code, out, _ = run_cli(["list", "foo", "--format", "{{.LimaHome}} {{.HostOS}}"], capsys)
    assert out == f"{home} linux\n"
    code, _, err = run_cli(["list", "--list-fields", "--format", "json"], capsys)
    assert code == 1 and "option --list-fields conflicts with option --format" in err


@pytest.mark.parametrize(("fmt", "message"), [
    ("{{.Unknown}}", "can't evaluate field Unknown in type store.FormatData"),
    ("{{range .Errors}}{{.}}{{end}}", "invalid go template: {{range}} is not supported"),
    ("{{printf \"%s\" .Name}}", 'invalid go template: function "printf" not defined'),
    ("{{.Name", "invalid go template: unclosed action"),
])
def test_template_errors_are_clear_and_print_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], fmt: str, message: str
) -> None:
    code, out, err = run_cli(["list", "foo", "--format", fmt], capsys)
    assert (code, out) == (1, "")
    assert message in err


def test_quiet_only_with_the_table(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["list", "--quiet", "foo", "bar"], capsys)
    assert (code, out) == (0, "foo\nbar\n")
    code, out, _ = run_cli(["list", "-q"], capsys)
    assert out == "bar\nbaz\nfoo\n"
    for fmt in ("json", "yaml", "{{.Name}}"):
        code, out, err = run_cli(["list", "-q", "--format", fmt], capsys)
        assert (code, out) == (1, "")
        assert "option --quiet can only be used with '--format table'" in err


def test_unmatched_names_list_the_rest_and_exit_1(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["ls", "foo", "foobar", "bar", "nope"], capsys)
    assert code == 1
    assert [line.split()[0] for line in lines(out)] == ["NAME", "foo", "bar"]
    assert "No instance matching foobar found." in err
    assert "No instance matching nope found." in err
    assert err.rstrip().endswith("unmatched instances")
    code, out, err = run_cli(["list", "-q", "foo", "foobar"], capsys)
    assert (code, out) == (1, "foo\n") and "unmatched instances" in err


def test_broken_directory_is_listed_as_broken(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "probe").mkdir()
    code, out, err = run_cli(["ls"], capsys)
    assert code == 0
    assert [line.split()[:2] for line in lines(out)][1:] == [
        ["bar", "Stopped"], ["baz", "Stopped"], ["foo", "Stopped"], ["probe", "Broken"]]
    assert "instance `probe` has errors" in err
    code, out, _ = run_cli(["ls", "--format", "json"], capsys)
    assert lines(out)[3].startswith('{"name":"probe","hostname":"","status":"Broken",')
    code, out, _ = run_cli(["ls", "--quiet"], capsys)
    assert lines(out) == ["bar", "baz", "foo", "probe"]
    code, out, _ = run_cli(["ls", "foo", "probe"], capsys)
    assert code == 0 and lines(out)[2].split()[:2] == ["probe", "Broken"]


def test_table_columns_and_sizes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["ls", "--all-fields"], capsys)
    assert code == 0
    rows = lines(out)
    assert rows[0].split() == ["NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY",
                               "DISK", "DIR"]
    assert rows[1].split() == ["bar", "Stopped", "127.0.0.1:0", "qemu", "x86_64", "1",
                               "512MiB", "2GiB", str(home / "bar")]
    # Go's tabwriter: each column as wide as its widest cell plus 4 spaces
    assert rows[0].startswith("NAME    STATUS     SSH            VMTYPE    ")


def test_no_instance_is_a_warning(_isolated_home: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["list"], capsys)
    assert (code, out) == (0, "")
    assert "No instance found. Run `limactl create` to create an instance." in err
