"""`limactl network list|create|delete` through the real CLI: networks.yaml made with Lima's
defaults on first use, Lima's table, JSON lines, flags and refusals; create and delete edit
only their network's lines, so the user's comments stay."""

from __future__ import annotations

import json
import logging
import re

import pytest
import yaml

from lima import paths
from lima.drivers import networks
from tests.component.cli import run_cli


def listed(capsys: pytest.CaptureFixture[str], *names: str) -> list[dict[str, str]]:
    code, out, _ = run_cli(["network", "list", "--json", *names], capsys)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_defaults_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["network", "ls"], capsys)
    assert code == 0
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    assert rows == [["NAME", "MODE", "GATEWAY", "INTERFACE"],
                    ["bridged", "bridged", "-", "en0"],
                    ["host", "host", "192.168.106.1/24", "-"],
                    ["shared", "shared", "192.168.105.1/24", "-"],
                    ["user-v2", "user-v2", "192.168.104.1/24", "-"]]
    assert out.splitlines()[0] == "NAME       MODE       GATEWAY             INTERFACE"
    path = paths.config_dir() / "networks.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["paths"]["socketVMNet"] == "/opt/socket_vmnet/bin/socket_vmnet"
    assert data["group"] == "admin"
    assert listed(capsys, "shared") == [{"name": "shared", "mode": "shared",
                                          "gateway": "192.168.105.1",
                                          "dhcpEnd": "192.168.105.254",
                                          "netmask": "255.255.255.0"}]
    assert listed(capsys, "bridged") == [{"name": "bridged", "mode": "bridged",
                                           "interface": "en0"}]


def test_create_delete_keep_comments(capsys: pytest.CaptureFixture[str],
                                     caplog: pytest.LogCaptureFixture) -> None:
    assert run_cli(["network", "create", "foo", "--gateway", "192.168.42.1"], capsys)[0] == 0
    assert listed(capsys, "foo") == [{"name": "foo", "mode": "user-v2",
                                       "gateway": "192.168.42.1",
                                       "netmask": "255.255.255.0"}]
    assert run_cli(["network", "create", "br", "--mode", "bridged", "--interface", "eth1"],
                   capsys)[0] == 0
    assert run_cli(["network", "create", "v6", "--mode", "host", "--gateway",
                    "fd00:42::1/64"], capsys)[0] == 0
    assert listed(capsys, "v6")[0]["netmask"] == "ffff:ffff:ffff:ffff::"
    path = paths.config_dir() / "networks.yaml"
    text = path.read_text()
    assert "# no gateway: the outside network runs DHCP" in text
    assert "  foo:\n    mode: user-v2\n    gateway: 192.168.42.1\n" in text
    assert yaml.safe_load(text)["networks"]["foo"]["interface"] == ""

    code, _, err = run_cli(["network", "delete", "foo"], capsys)
    assert code == 1
    assert "`limactl network delete` currently always requires `--force`" in err
    assert run_cli(["network", "rm", "--force", "foo", "bridged", "nosuch"], capsys)[0] == 0
    names = [n["name"] for n in listed(capsys)]
    assert names == ["br", "host", "shared", "user-v2", "v6"]
    text = path.read_text()
    assert "en0" not in text and "# no gateway" not in text
    assert text.startswith("# Networks for `limactl create --network lima:NAME`")
    with caplog.at_level(logging.WARNING):
        assert listed(capsys, "nosuch", "br") == [{"name": "br", "mode": "bridged",
                                                   "interface": "eth1"}]
    assert "No network matching nosuch found." in caplog.text

    # every network gone: user-v2 is still there (Lima fills it in), the file stays valid
    run_cli(["network", "delete", "-f", "br", "host", "shared", "user-v2", "v6"], capsys)
    assert yaml.safe_load(path.read_text())["networks"] == {}
    assert [n["name"] for n in listed(capsys)] == ["user-v2"]
    code, _, err = run_cli(["network", "create", "user-v2", "--gateway", "10.0.0.1"], capsys)
    assert code == 1 and "network `user-v2` already exists" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--gateway", "192.168.42.1/33"],
     "failed to parse CIDR `192.168.42.1/33`: invalid CIDR address: 192.168.42.1/33"),
    (["--gateway", "nope"], "failed to parse CIDR `nope/24`: invalid CIDR address: nope/24"),
    (["--gateway", "127.0.0.1"], "invalid IP address: 127.0.0.1"),
    (["--gateway", "0.0.0.0/8"], "invalid IP address: 0.0.0.0"),
    ([], "network mode `user-v2` requires specifying gateway"),
    (["--gateway", "10.1.1.1", "--interface", "eth0"],
     "network mode `user-v2` does not support specifying interface"),
    (["--mode", "bridged"], "network mode `bridged` requires specifying interface"),
    (["--mode", "bridged", "--interface", "e", "--gateway", "10.1.1.1"],
     "network mode `bridged` does not support specifying gateway"),
])
def test_create_refusals(args: list[str], message: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["network", "create", "x", *args], capsys)
    assert code == 1 and message in err
    assert "x" not in [n["name"] for n in listed(capsys)]


def test_users_file_unknown_keys_and_damage(capsys: pytest.CaptureFixture[str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    path = paths.config_dir() / "networks.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("networks: {lab: {mode: shared, gateway: 10.9.0.1, netmask: "
                    "255.255.0.0, vdeSwitch: x}}\n")
    with caplog.at_level(logging.WARNING):
        rows = listed(capsys)
    assert [r["name"] for r in rows] == ["lab", "user-v2"]
    assert "Non-strict YAML is deprecated" in caplog.text
    assert networks.load_config().networks["lab"].gateway_cidr() == "10.9.0.1/16"
    # a flow-style file cannot be edited line by line: written from its data instead
    assert run_cli(["network", "create", "n2", "--gateway", "10.8.0.1/24"], capsys)[0] == 0
    # n2 is a user-v2 network with a gateway: Lima then adds no `user-v2` of its own
    assert [r["name"] for r in listed(capsys)] == ["lab", "n2"]
    path.write_text("networks: [\n")
    code, _, err = run_cli(["network", "list"], capsys)
    assert code == 1 and f"cannot parse `{path}`" in err
