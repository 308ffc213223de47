"""`limactl disk import DISK FILE` through the real CLI with real qemu-img: a qcow2 and a
raw image become Lima disks (copied, not moved), with Lima's messages and refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lima.drivers import runner
from tests.component.cli import run_cli

MiB = 1 << 20


def make_image(path: Path, fmt: str, size: str, *extra: str) -> Path:
    runner.run(["qemu-img", "create", "-q", "-f", fmt, *extra, path, size])
    return path


def test_import_qcow2_and_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    qcow = make_image(tmp_path / "a.qcow2", "qcow2", "96M")
    raw = tmp_path / "b.img"
    raw.write_bytes(b"\x01" * 4096)
    with raw.open("r+b") as f:
        f.truncate(8 * MiB)
    with caplog.at_level(logging.INFO):
        assert run_cli(["disk", "import", "q", str(qcow)], capsys)[0] == 0
        assert run_cli(["disk", "import", "r", str(raw)], capsys)[0] == 0
    assert "Imported q with size 96MiB" in caplog.text
    assert "Imported r with size 8MiB" in caplog.text
    assert qcow.exists() and raw.exists()  # copied, not moved
    _, out, _ = run_cli(["disk", "list", "--json"], capsys)
    listed = {d["name"]: d for d in map(json.loads, out.splitlines())}
    assert (listed["q"]["format"], listed["q"]["size"]) == ("qcow2", 96 * MiB)
    assert (listed["r"]["format"], listed["r"]["size"]) == ("raw", 8 * MiB)
    datadisk = Path(listed["r"]["dir"]) / "datadisk"
    assert datadisk.read_bytes()[:4096] == b"\x01" * 4096
    assert datadisk.stat().st_ino != raw.stat().st_ino


def test_import_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmdk = make_image(tmp_path / "c.vmdk", "vmdk", "16M")
    code, _, err = run_cli(["disk", "import", "v", str(vmdk)], capsys)
    assert code == 1
    assert "disk format `vmdk` not supported, use `qcow2` or `raw` instead" in err

    base = make_image(tmp_path / "base.qcow2", "qcow2", "16M")
    over = make_image(tmp_path / "over.qcow2", "qcow2", "16M", "-F", "qcow2", "-b", str(base))
    code, _, err = run_cli(["disk", "import", "o", str(over)], capsys)
    assert code == 1
    assert f"names the host file {base} as its backing file" in err

    code, _, err = run_cli(["disk", "import", "m", str(tmp_path / "missing.img")], capsys)
    assert code == 1
    assert f"open {tmp_path / 'missing.img'}: no such file or directory" in err

    ok = make_image(tmp_path / "d.qcow2", "qcow2", "16M")
    assert run_cli(["disk", "import", "d", str(ok)], capsys)[0] == 0
    code, _, err = run_cli(["disk", "import", "d", str(ok)], capsys)
    assert code == 1
    assert "disk `d` already exists" in err

    code, _, err = run_cli(["disk", "import", "d"], capsys)
    assert code != 0  # a missing argument (its wording is the CLI-wide usage error's)

    code, out, _ = run_cli(["disk", "list", "--json"], capsys)
    assert code == 0
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["d"]
