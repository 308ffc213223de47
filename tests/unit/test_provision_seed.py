"""What every provision mode puts on the seed (cidata.seed_files, no ISO): paths, modes,
PARAM expansion, Lima's LIMA_CIDATA_* lines, the labels boot.sh names failures with, yq's
compiled program, caCerts in user-data, and the flags boot.sh reports on guests without
cloud-init."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from lima.drivers import cidata
from lima.errors import SpecError
from tests.unit.cidata_fixtures import Provision, make_spec

CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

ALL_MODES = (
    Provision(mode="system", script="#!/bin/sh\n# install {{.Param.PKG}}\napt-get install x\n"),
    Provision(mode="user", script="#!/bin/sh\necho user {{.Param.PKG}}\n"),
    Provision(mode="boot", script="systemctl disable foo\n"),
    Provision(mode="dependency", script="#!/bin/sh\necho dep\n",
              skip_default_dependency_resolution=True),
    Provision(mode="data", path="/etc/{{.Param.PKG}}.conf", content="pkg={{.Param.PKG}}\n",
              owner="alice:alice", permissions="600", overwrite=False),
    Provision(mode="yq", path="/home/alice/.config/docker/daemon.json",
              expression=".features.cdi = true | .features.snap = {{.Param.FLAG}}",
              format="auto", owner="alice", permissions="644"),
    Provision(mode="yq", path="/etc/x.d/override.conf", format="ini",
              expression='.Socket.SocketUser="alice"', owner="root:root", permissions="644"),
    Provision(mode="ansible", playbook="site.yml"),
)


def _seed(**kw: object) -> dict[str, tuple[bytes, bool]]:
    spec = make_spec(**kw)
    files = cidata.seed_files(spec, iid="iid-1", keys=["ssh-ed25519 AAAA k"], host_env={},
                              host_home="/home/host")
    return {f.path: (f.data, f.executable) for f in files}


def _env(files: dict[str, tuple[bytes, bool]]) -> dict[str, str]:
    out = {}
    for line in files["lima.env"][0].decode().splitlines():
        key, _, value = line.partition("=")
        out[key] = shlex.split(value)[0] if value else ""
    return out


@pytest.fixture
def seed() -> dict[str, tuple[bytes, bool]]:
    return _seed(provision=ALL_MODES, param={"PKG": "vim", "FLAG": "false"})


def test_script_modes_land_in_their_directories(seed: dict[str, tuple[bytes, bool]]) -> None:
    assert seed["provision.system/00000000"] == (
        b"#!/bin/sh\n# install vim\napt-get install x\n", True)
    assert seed["provision.user/00000001"] == (b"#!/bin/sh\necho user vim\n", True)
    # mode: boot runs from boot/, after limapy's own boot scripts (00-49).
    assert seed["boot/50-provision-00000002"] == (b"systemctl disable foo\n", True)
    assert seed["provision.dependency/00000003"] == (b"#!/bin/sh\necho dep\n", True)
    assert _env(seed)["LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION"] == "1"


def test_data_mode_content_writer_and_lima_env(seed: dict[str, tuple[bytes, bool]]) -> None:
    assert seed["provision.data/00000004"] == (b"pkg=vim\n", False)
    writer, executable = seed["provision.data/00000004.sh"]
    assert executable
    text = writer.decode()
    assert "dest=/etc/vim.conf" in text
    assert "chown alice:alice" in text and "chmod 600" in text
    assert "not overwritten" in text  # overwrite: false keeps an existing file
    env = _env(seed)
    assert env["LIMA_CIDATA_DATAFILE_00000004_PATH"] == "/etc/vim.conf"
    assert env["LIMA_CIDATA_DATAFILE_00000004_OWNER"] == "alice:alice"
    assert env["LIMA_CIDATA_DATAFILE_00000004_PERMISSIONS"] == "600"
    assert env["LIMA_CIDATA_DATAFILE_00000004_OVERWRITE"] == "false"


def test_yq_mode_expression_and_compiled_program(seed: dict[str, tuple[bytes, bool]]) -> None:
    assert seed["provision.yq/00000005"][0] == (
        b".features.cdi = true | .features.snap = false")
    program = json.loads(seed["provision.yq/00000005.json"][0])
    assert program == [
        {"op": "set", "path": ["features", "cdi"], "value": True},
        {"op": "set", "path": ["features", "snap"], "value": False},
    ]
    ini = json.loads(seed["provision.yq/00000006.json"][0])
    assert ini == [{"op": "set", "path": ["Socket", "SocketUser"], "value": "alice"}]
    env = _env(seed)
    assert env["LIMA_CIDATA_YQ_PROVISION_00000005_FORMAT"] == "json"  # auto, by extension
    assert env["LIMA_CIDATA_YQ_PROVISION_00000005_OWNER"] == "alice"
    assert env["LIMA_CIDATA_YQ_PROVISION_00000006_FORMAT"] == "ini"
    assert env["LIMA_CIDATA_YQ_PROVISION_00000006_PATH"] == "/etc/x.d/override.conf"
    assert "util/lima-yq" in seed and seed["util/lima-yq"][1]


def test_ansible_is_not_on_the_seed(seed: dict[str, tuple[bytes, bool]]) -> None:
    assert not [p for p in seed if p.endswith("00000007") or "ansible" in p]


def test_labels_name_each_step_as_lima_yaml_does(seed: dict[str, tuple[bytes, bool]]) -> None:
    labels = dict(line.split("\t") for line in seed["provision.labels"][0].decode().splitlines())
    assert labels == {
        "boot/50-provision-00000002": 'provision[2] (mode: boot) "systemctl disable foo"',
        "provision.data/00000004.sh": 'provision[4] (mode: data) "/etc/vim.conf"',
        "provision.dependency/00000003": 'provision[3] (mode: dependency) "echo dep"',
        "provision.system/00000000": 'provision[0] (mode: system) "install vim"',
        "provision.user/00000001": 'provision[1] (mode: user) "echo user vim"',
        "provision.yq/00000005": 'provision[5] (mode: yq) "/home/alice/.config/docker/daemon.json"',
        "provision.yq/00000006": 'provision[6] (mode: yq) "/etc/x.d/override.conf"',
    }


def test_no_provision_no_labels() -> None:
    seed = _seed()
    assert "provision.labels" not in seed
    assert not [p for p in seed if p.startswith("provision.")]


def test_yq_outside_the_subset_fails_the_seed_by_name() -> None:
    bad = Provision(mode="yq", path="/etc/a.json", expression=".a = .b", format="auto")
    with pytest.raises(SpecError, match=r"provision\[0\]\.expression: only literal"):
        _seed(provision=(bad,))
    toml = Provision(mode="yq", path="/etc/a.toml", expression=".a = 1", format="auto")
    with pytest.raises(SpecError, match=r'provision\[0\]\.format: format "toml"'):
        _seed(provision=(toml,))


def test_ca_certs_go_to_cloud_init(tmp_path: Path) -> None:
    pem = tmp_path / "org.pem"
    pem.write_text(CERT)
    raw = {"caCerts": {"removeDefaults": True, "files": [str(pem)], "certs": [CERT.strip()]}}
    seed = _seed(raw=raw)
    doc = yaml.safe_load(seed["user-data"][0])
    assert doc["ca_certs"] == {"remove_defaults": True, "trusted": [CERT, CERT]}
    assert _env(seed)["LIMA_CIDATA_CA_CERTS"] == "3"
    assert "ca_certs" not in yaml.safe_load(_seed()["user-data"][0])  # Lima leaves it out
    assert _env(_seed())["LIMA_CIDATA_CA_CERTS"] == "0"


def test_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    raw = {"caCerts": {"files": [str(tmp_path / "missing.pem")]}}
    with pytest.raises(SpecError, match=r"caCerts\.files\[0\]: cannot read .*missing\.pem"):
        _seed(raw=raw)


def test_upgrade_packages_and_timezone() -> None:
    seed = _seed(upgrade_packages=True, timezone="Europe/Paris")
    doc = yaml.safe_load(seed["user-data"][0])
    assert doc["package_upgrade"] is True and doc["package_update"] is True
    assert doc["timezone"] == "Europe/Paris"
    assert _env(seed)["LIMA_CIDATA_UPGRADE_PACKAGES"] == "1"
    assert _env(_seed())["LIMA_CIDATA_UPGRADE_PACKAGES"] == ""


def test_env_and_proxies_in_etc_environment() -> None:
    seed = _seed(env={"GREETING": "hello world"}, propagate_proxy_env=True)
    host = {"http_proxy": "http://127.0.0.1:3128", "NO_PROXY": "localhost"}
    spec = make_spec(env={"GREETING": "hello world"}, propagate_proxy_env=True)
    files = {f.path: f.data for f in cidata.seed_files(
        spec, iid="i", keys=["k"], host_env=host, host_home=None)}
    text = files["etc_environment"].decode()
    assert text.startswith("#LIMA-START\n") and text.endswith("#LIMA-END\n")
    assert 'GREETING="hello world"\n' in text
    # A proxy on the host's loopback is reached through the slirp gateway.
    assert "http_proxy=http://192.168.5.2:3128\n" in text
    assert "HTTP_PROXY=http://192.168.5.2:3128\n" in text
    assert "no_proxy=localhost\n" in text
    assert seed["etc_environment"][0].decode().count("GREETING") == 1
