"""`limactl info` against Lima 2.2's pkg/limainfo.LimaInfo: every key in Lima's order, the
values true for this host, and `--yq`. Through the real CLI entry point."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest

from tests.component.cli import run_cli

# LimaInfo's json tags in Lima 2.2 (pkg/limainfo/limainfo.go), in struct order.
LIMA_INFO_KEYS = ["version", "templates", "defaultTemplate", "limaHome", "vmTypes",
                  "vmTypesEx", "guestAgents", "shellEnvBlock", "hostOS", "hostArch",
                  "identityFile", "plugins", "libexecPaths", "sharePaths"]


def test_every_key_of_limas_struct_in_order(capsys: pytest.CaptureFixture[str],
                                           _isolated_home: Path) -> None:
    code, out, err = run_cli(["info"], capsys)
    assert code == 0, err
    assert out.startswith('{\n    "version": ')  # Lima's yq encoder: indent 4
    info = json.loads(out)
    assert list(info)[:len(LIMA_INFO_KEYS)] == LIMA_INFO_KEYS
    assert list(info)[len(LIMA_INFO_KEYS):] == ["limapyVersion"]  # limapy's own, last


def test_values_are_this_hosts(capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    info = json.loads(run_cli(["info"], capsys)[1])
    assert info["limaHome"] == str(_isolated_home)
    assert info["identityFile"] == str(_isolated_home / "_config" / "user")
    assert info["hostOS"] == "linux"
    assert info["hostArch"] == {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine())
    assert info["vmTypes"] == ["qemu"]
    assert info["vmTypesEx"] == {"qemu": {"location": "internal"}}  # Lima's registry.Internal
    assert {"x86_64", "aarch64"} <= set(info["guestAgents"])
    for agent in info["guestAgents"].values():
        assert set(agent) == {"location"} and Path(agent["location"]).is_file()
    assert {"PATH", "SSH_*", "USER"} <= set(info["shellEnvBlock"])
    assert info["libexecPaths"] is None  # Go's nil slice: none beside limactl here
    share = [Path(p) for p in info["sharePaths"]]
    assert share and all((p / "templates" / "default.yaml").is_file() for p in share)
    locations = {t["name"]: t["location"] for t in info["templates"]}
    assert Path(locations["default"]).parent == share[0] / "templates"
    assert info["defaultTemplate"]["cpus"] >= 1


def test_yq_prints_scalars_bare_and_containers_indented(
        capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    code, out, _ = run_cli(["info", "--yq", ".limaHome"], capsys)
    assert (code, out) == (0, f"{_isolated_home}\n")
    code, out, _ = run_cli(["info", "--yq", ".vmTypes"], capsys)
    assert (code, out) == (0, '[\n    "qemu"\n]\n')
    code, out, _ = run_cli(["info", "--yq", ".shellEnvBlock[] | select(. == \"PATH\")"],
                           capsys)
    assert (code, out) == (0, "PATH\n")
    code, out, err = run_cli(["info", "--yq", "env.HOME"], capsys)
    assert code == 1 and out == "" and "env operations have been disabled" in err


def test_plugins_are_the_ones_limactl_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           _isolated_home: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert json.loads(run_cli(["info"], capsys)[1])["plugins"] is None  # Go's nil slice
    plugin = tmp_path / "limactl-hello"
    plugin.write_text("#!/bin/sh\n# <limactl-desc>Say hello</limactl-desc>\necho hi\n")
    plugin.chmod(0o755)
    (tmp_path / "limactl-plain").write_bytes(b"\x7fELF")
    (tmp_path / "limactl-plain").chmod(0o755)
    info = json.loads(run_cli(["info"], capsys)[1])
    assert info["plugins"] == [
        {"name": "hello", "path": str(plugin), "description": "Say hello"},
        {"name": "plain", "path": str(tmp_path / "limactl-plain")}]  # omitempty


def test_coloured_on_a_terminal(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    plain = json.loads(run_cli(["info"], capsys)[1])
    monkeypatch.setenv("_LIMA_OUTPUT_IS_TTY", "1")
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "\x1b[0m" in out
    assert json.loads(re.sub(r"\x1b\[[0-9;]*m", "", out)) == plain
