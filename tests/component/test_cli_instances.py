"""create / list / delete / protect through the real CLI entry point, on a local image."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.component.cli import run_cli


@pytest.fixture
def local_image(tmp_path: Path) -> Path:
    img = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    return img


def write_yaml(tmp_path: Path, image: Path, name: str = "vm.yaml", extra: str = "") -> Path:
    f = tmp_path / name
    f.write_text(
        f"images:\n- location: {image}\n  arch: x86_64\n"
        "arch: x86_64\ncpus: 1\nmemory: 512MiB\ndisk: 1GiB\nmounts: []\n"
        "vmOpts:\n  qemu:\n    restrictNetwork: true\n" + extra
    )
    return f


def test_create_list_delete(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    f = write_yaml(tmp_path, local_image)
    code, _, err = run_cli(["create", str(f)], capsys)
    assert code == 0, err
    inst = _isolated_home / "vm"
    for name in ("lima.yaml", "lima-version", "basedisk", "diffdisk"):
        assert (inst / name).is_file(), name
    assert not any(p.name.startswith(".creating") for p in _isolated_home.iterdir())

    code, out, _ = run_cli(["list", "--format", "json"], capsys)
    assert code == 0
    rec = json.loads(out.splitlines()[0])
    assert rec["name"] == "vm"
    assert rec["status"] == "Stopped"
    assert rec["cpus"] == 1
    assert rec["memory"] == 512 * 1024**2
    assert rec["disk"] == 1024**3
    assert rec["dir"] == str(inst)

    code, out, _ = run_cli(["list"], capsys)
    assert out.splitlines()[0].split()[:3] == ["NAME", "STATUS", "SSH"]
    assert out.splitlines()[1].split()[0] == "vm"

    code, _, err = run_cli(["create", str(f)], capsys)
    assert code == 1 and "already exists" in err

    code, _, _ = run_cli(["protect", "vm"], capsys)
    assert code == 0
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1 and "protected" in err
    assert inst.is_dir()
    run_cli(["unprotect", "vm"], capsys)
    code, _, _ = run_cli(["delete", "vm"], capsys)
    assert code == 0
    assert not inst.exists()


def test_failed_create_leaves_nothing(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    bad = write_yaml(tmp_path, local_image, "bad.yaml")
    text = bad.read_text().replace(
        "  arch: x86_64\n", "  arch: x86_64\n  digest: sha256:" + "0" * 64 + "\n", 1
    )
    bad.write_text(text)
    code, _, err = run_cli(["create", str(bad)], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert not (_isolated_home / "bad").exists()
    assert [p for p in _isolated_home.iterdir() if not p.name.startswith("_")] == []


def test_invalid_spec_create_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("images: []\ncpus: -1\n")
    code, _, err = run_cli(["create", str(f)], capsys)
    assert code == 1
    assert "broken.yaml" in err and "cpus" in err
    assert not (_isolated_home / "broken").exists()


def test_list_unknown_name_and_broken_dir(
    capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    (_isolated_home / "ghost").mkdir(parents=True)
    code, out, _ = run_cli(["list", "--format", "json"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert rec["status"] == "Broken"
    assert any("lima.yaml" in e for e in rec["errors"])
    code, _, err = run_cli(["list", "nope"], capsys)
    assert code == 1 and "nope" in err


def test_invalid_names_refused(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_yaml(tmp_path, local_image)
    for bad in ("-x", "a b", "_hidden", "x" * 200):
        code, _, err = run_cli(["create", "--name", bad, str(f)], capsys)
        assert code == 1, bad
        assert "name" in err


def test_lima_home_env_respected(_isolated_home: Path) -> None:
    assert os.environ["LIMA_HOME"] == str(_isolated_home)
