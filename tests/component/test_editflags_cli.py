"""Lima's edit flags through the real CLI: `create` with flags (what lands in the stored
lima.yaml), values refused before anything is created, `limactl edit` of a stopped
instance, of a file and in $EDITOR, and `create`/`start`'s argument forms that need no
boot (the tiny-guest integration test boots one)."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.component.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def template(tmp_path: Path) -> Path:
    img = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    f = tmp_path / "vm.yaml"
    f.write_text(
        f"images:\n- location: {img}\n  arch: x86_64\narch: x86_64\ncpus: 1\n"
        "memory: 512MiB\ndisk: 1GiB\nmounts: []\nparam:\n  release: ''\n"
        "provision:\n- mode: system\n  script: echo \"$PARAM_release\"\n"
        "vmOpts:\n  qemu:\n    restrictNetwork: true\n")
    return f


def stored(home: Path, name: str) -> dict[str, object]:
    data = yaml.safe_load((home / name / "lima.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_create_with_flags_stores_what_they_set(
    template: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    code, out, err = run_cli([
        "create", "--name", "vm", "--cpus", "2", "--memory", "1.5", "--disk=3",
        "--mount", "/tmp/a:w", "--mount", "/tmp/b,/tmp/c", "--mount-type", "9p",
        "--port-forward", "8080:80,static=true", "--param", "release=v1", "--video=false",
        "--ssh-port", "2222", "--set", '.env.X = "1"', "--set", ".cpus += 1", str(template)],
        capsys)
    assert code == 0, err
    assert "Created instance 'vm'" in out
    data = stored(_isolated_home, "vm")
    assert data["cpus"] == 3  # --cpus 2, then the --set after it (Lima's order)
    assert data["memory"] == "1.5GiB" and data["disk"] == "3GiB"
    assert [m["location"] for m in data["mounts"]] == ["/tmp/c", "/tmp/b", "/tmp/a"]  # type: ignore[index]
    assert data["mounts"][2]["writable"] is True  # type: ignore[index]
    assert data["mountType"] == "9p"
    assert data["portForwards"] == [{"guestPort": 80, "hostPort": 8080, "static": True}]
    assert data["param"] == {"release": "v1"}
    assert data["video"] == {"display": "none"}
    assert data["ssh"] == {"localPort": 2222}
    assert data["env"] == {"X": "1"}


@pytest.mark.parametrize("flags, message", [
    (["--memory", "abc"], 'invalid argument "abc" for "--memory" flag: strconv.ParseFloat'),
    (["--set", '.cpus = "many"'], "vm.yaml:5: cpus: expected an integer, got 'many' (set by "
                                  "--set)"),
    (["--set", ".cpus = "], "error while processing flag `set`: failed to parse"),
    (["--param", "missing=1"], "error while processing flag `param`: template does not "
                               "define param `missing`"),
    (["--mount-type", "nfs"], 'mountType: must be one of "reverse-sshfs"'),
    (["--rosetta"], "error while processing flag `rosetta`"),
    (["--vm-type", "vz"], "error while processing flag `vm-type`: limapy runs QEMU only"),
    (["--network", "vzNAT"], "error while processing flag `network`"),
    (["--video=perhaps"], 'invalid argument "perhaps" for "--video" flag'),
    (["--cpus", "-2"], "invalid value for number of cpus, must be >= 0"),
])
def test_bad_flag_values_create_nothing(
    flags: list[str], message: str, template: Path, capsys: pytest.CaptureFixture[str],
    _isolated_home: Path,
) -> None:
    code, _, err = run_cli(["create", "--name", "vm", *flags, str(template)], capsys)
    assert code == 1
    assert message in err
    assert not (_isolated_home / "vm").exists()


def test_edit_a_stopped_instance_and_an_invalid_edit(
    template: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_cli(["create", "--name", "vm", str(template)], capsys)[0] == 0
    code, _, err = run_cli(["edit", "vm", "--cpus", "3", "--memory", "2", "--mount-none"],
                           capsys)
    assert code == 0, err
    assert "Instance `vm` configuration edited" in err
    data = stored(_isolated_home, "vm")
    assert (data["cpus"], data["memory"], data.get("mounts")) == (3, "2GiB", None)

    before = (_isolated_home / "vm" / "lima.yaml").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["edit", "vm", "--set", '.memory = "lots"'], capsys)
    assert code == 1
    assert (_isolated_home / "vm" / "lima.yaml").read_bytes() == before
    assert "the YAML is invalid, saved the buffer as `lima.REJECTED.yaml`" in err
    line = next(ln for ln in err.splitlines() if ln.startswith("lima.REJECTED.yaml:"))
    number = int(line.split(":")[1])
    rejected = (tmp_path / "lima.REJECTED.yaml").read_text().splitlines()
    assert rejected[number - 1].startswith("memory: lots")
    assert "(set by --set)" in line

    # create-only flags are no edit flags (as in Lima)
    code, _, err = run_cli(["edit", "vm", "--arch", "aarch64"], capsys)
    assert code == 1 and "unknown flag: --arch" in err
    code, _, err = run_cli(["edit", "nosuch", "--cpus", "2"], capsys)
    assert code == 1 and "instance `nosuch` not found" in err
    # no flags and no terminal: nothing to edit, nothing changed (Lima: exit 0)
    assert run_cli(["edit", "vm"], capsys)[0] == 0
    assert (_isolated_home / "vm" / "lima.yaml").read_bytes() == before


def test_edit_a_file_in_place(template: Path, capsys: pytest.CaptureFixture[str],
                              _isolated_home: Path) -> None:
    code, _, err = run_cli(["edit", str(template), "--cpus", "4", "--set", ".env.A = 1"],
                           capsys)
    assert code == 0, err
    data = yaml.safe_load(template.read_text())
    assert data["cpus"] == 4 and data["env"] == {"A": 1}
    assert not [p for p in _isolated_home.iterdir() if not p.name.startswith("_")]


def limactl(args: list[str], home: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(REPO),
           **kwargs.pop("env", {})}  # type: ignore[dict-item]
    return subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          timeout=60, check=False, **kwargs)  # type: ignore[call-overload]


def test_edit_opens_editor_with_a_terminal(
    template: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    assert run_cli(["create", "--name", "vm", str(template)], capsys)[0] == 0
    controller, terminal = pty.openpty()  # stdout a terminal: Lima's default --tty
    try:
        proc = limactl(["edit", "vm"], _isolated_home, stdout=terminal, stderr=subprocess.PIPE,
                       input=b",s/^cpus: 1$/cpus: 6/\nw\nq\n", env={"EDITOR": "ed",
                                                                   "VISUAL": ""})
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert stored(_isolated_home, "vm")["cpus"] == 6
    # the global --tty, read through the shared contract, opens it without a terminal too
    ed = {"EDITOR": "ed", "VISUAL": ""}
    proc = limactl(["--tty", "edit", "vm"], _isolated_home, capture_output=True,
                   input=b",s/^cpus: 6$/cpus: 7/\nw\nq\n", env=ed)
    assert proc.returncode == 0, proc.stderr
    assert stored(_isolated_home, "vm")["cpus"] == 7
    # and --tty=false keeps a terminal's editor closed
    controller, terminal = pty.openpty()
    try:
        proc = limactl(["--tty=false", "edit", "vm"], _isolated_home, stdout=terminal,
                       stderr=subprocess.PIPE, input=b",s/^cpus: 7$/cpus: 8/\nw\nq\n", env=ed)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert stored(_isolated_home, "vm")["cpus"] == 7


def test_create_forms(template: Path, capsys: pytest.CaptureFixture[str],
                      _isolated_home: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default.yaml").write_text(template.read_text())
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(templates))
    code, _, err = run_cli(["create", "--cpus", "2"], capsys)  # no argument: "default"
    assert code == 0, err
    assert stored(_isolated_home, "default")["cpus"] == 2
    code, _, err = run_cli(["create"], capsys)
    assert code == 1 and "instance `default` already exists" in err
    # NAME: a new instance from template:default (a form Lima deprecates)
    code, _, err = run_cli(["create", "other"], capsys)
    assert code == 0, err
    assert stored(_isolated_home, "other")["cpus"] == 1
    code, _, err = run_cli(["create", "--name", "b", "a"], capsys)
    assert code == 1
    assert "instance name `a` and CLI flag --name=`b` cannot be specified together" in err
    code, _, err = run_cli(["create", "-"], capsys)
    assert code == 1
    assert "must pass instance name with --name when reading template from stdin" in err


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`python3 -m http.server` on 127.0.0.1, serving a directory; ended by PID."""
    served = tmp_path / "served"
    served.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], cwd=served,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield served, port
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_create_from_a_url(template: Path, http_dir: tuple[Path, int],
                           capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    served, port = http_dir
    (served / "web.yaml").write_text(template.read_text())
    code, _, err = run_cli(["create", "--memory", "1", f"http://127.0.0.1:{port}/web.yaml"],
                           capsys)
    assert code == 0, err
    assert stored(_isolated_home, "web")["memory"] == "1GiB"
    code, _, err = run_cli(["create", "--name", "x", f"http://127.0.0.1:{port}/none.yaml"],
                           capsys)
    assert code == 1 and "HTTP 404" in err
    assert not (_isolated_home / "x").exists()


def test_start_forms_refused_before_anything_boots(
    template: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_cli(["start", "-"], capsys)
    assert code == 1 and "must pass instance name with --name" in err
    code, _, err = run_cli(["start", "--name", "b", "a"], capsys)
    assert code == 1 and "cannot be specified together" in err
    code, _, err = run_cli(["start", "--timeout", "soon", "a"], capsys)
    assert code == 1
    assert 'invalid argument "soon" for "--timeout" flag: time: invalid duration "soon"' in err
    # edit flags on an existing instance: validated before anything is written or booted
    assert run_cli(["create", "--name", "vm", str(template)], capsys)[0] == 0
    before = (_isolated_home / "vm" / "lima.yaml").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["start", "vm", "--set", ".cpus = 0.5"], capsys)
    assert code == 1 and "cpus" in err
    assert (_isolated_home / "vm" / "lima.yaml").read_bytes() == before
    assert not (_isolated_home / "vm" / "qemu.pid").exists()
