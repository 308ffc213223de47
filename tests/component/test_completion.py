"""`limactl completion`: the bash script is sourced in a real bash and its function is
driven as bash's completion would drive it (verbs, flags, flag values, instance names and
template names in a temp LIMA_HOME); zsh and fish answers come from `limactl __complete`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lima.commands.completion import render, template_names
from tests.component.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def home(_isolated_home: Path) -> Path:
    for name in ("web", "db1", "db2"):
        (_isolated_home / name).mkdir()
        (_isolated_home / name / "lima.yaml").write_text("images: []\n")
    return _isolated_home


def _bash_complete(line: str, home: Path) -> list[str]:
    """COMPREPLY after completing `line` (cursor at its end) with the sourced script."""
    bindir = Path(sys.executable).parent
    assert (bindir / "limactl").exists(), "the venv's limactl is needed on PATH"
    script = subprocess.run([sys.executable, "-m", "lima.cli", "completion", "bash"],
                            capture_output=True, text=True, check=True, cwd=ROOT).stdout
    driver = (
        script
        + 'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}\n'
        + 'read -r -a COMP_WORDS <<< "$COMP_LINE"\n'
        + '[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")\n'
        + "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        + "_limactl_completion\n"
        + 'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "LIMA_HOME": str(home),
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", driver, "bash", line], capture_output=True,
                            text=True, env=env, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return [x for x in result.stdout.splitlines() if x]


def test_bash_script_registers_the_function(home: Path) -> None:
    script = subprocess.run([sys.executable, "-m", "lima.cli", "completion", "bash"],
                            capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result = subprocess.run(["bash", "-c", script + "complete -p limactl"],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "complete -o nosort -F _limactl_completion limactl"


def test_bash_completes_verbs_instances_flags_and_templates(home: Path) -> None:
    assert _bash_complete("limactl sh", home) == ["shell", "show-ssh"]
    assert _bash_complete("limactl shell ", home) == ["db1", "db2", "web"]
    assert _bash_complete("limactl stop d", home) == ["db1", "db2"]
    assert _bash_complete("limactl tunnel --socks-port 1080 w", home) == ["web"]
    assert _bash_complete("limactl show-ssh --format c", home) == ["cmd", "config"]
    assert _bash_complete("limactl stop --f", home) == ["--force"]
    # bash splits words at ':' and replaces only what follows it.
    assert _bash_complete("limactl create template:debian-1", home) == [
        "debian-12", "debian-12-local", "debian-13"]
    assert "template" in _bash_complete("limactl te", home)


def test_zsh_and_fish_answers(home: Path, capsys: Capsys) -> None:
    code, out, _ = run_cli(["__complete", "zsh", "--", "stop", "--f"], capsys)
    assert (code, out.splitlines()) == (0, ["nofile",
                                            "--force:Kill the VM at once (no clean shutdown)."])
    code, out, _ = run_cli(["__complete", "--no-descriptions", "zsh", "--", "create",
                            "template:de"], capsys)
    assert "template\\:default" in out.splitlines()
    code, out, _ = run_cli(["__complete", "fish", "--", "delete", ""], capsys)
    assert out.splitlines() == ["nofile", "db1", "db2", "web"]
    code, out, _ = run_cli(["__complete", "fish", "--", "copy", ""], capsys)
    assert out.splitlines() == ["default"]  # files: the shell's own completion


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_call_back(shell: str, capsys: Capsys) -> None:
    code, out, _ = run_cli(["completion", shell], capsys)
    assert code == 0 and f"__complete {shell} --" in out
    code, out, _ = run_cli(["completion", shell, "--no-descriptions"], capsys)
    assert f"__complete --no-descriptions {shell} --" in out


def test_powershell_is_refused(capsys: Capsys) -> None:
    code, out, err = run_cli(["completion", "powershell"], capsys)
    assert (code, out) == (1, "")
    assert "completion for powershell is not supported by limapy" in err


def test_private_templates_only_once_typed(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "x.yaml").write_text("{}\n")
    (tmp_path / "_images" / "_y.yaml").write_text("{}\n")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(tmp_path))
    assert "template:_images/_y" not in template_names("template:_images/")
    assert "template:_images/x" in template_names("template:_images/")
    assert template_names("template:_images/_") == ["template:_images/_y"]


def test_template_dirs_are_the_spec_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    from lima.commands.completion import _template_dirs
    from lima.schemas.templates import template_dirs

    monkeypatch.setenv("LIMA_TEMPLATES_PATH", "/a:/b")
    assert _template_dirs() == template_dirs()


def test_render_per_shell() -> None:
    found = [("template:default", "the default"), ("a:b", "")]
    assert render("bash", "default", found, "template:d", True) == "default\ndefault\na:b\n"
    assert render("zsh", "nofile", found, "", True) == (
        "nofile\ntemplate\\:default:the default\na\\:b\n")
    assert render("fish", "nofile", found, "", False) == "nofile\ntemplate:default\na:b\n"


def test_bash_is_in_the_table() -> None:
    from lima.hostprograms import PROGRAMS

    assert shutil.which("bash") and PROGRAMS["bash"].tests
