"""ssh.config, `limactl shell` arguments and the Ansible inventory."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from lima import paths
from lima.drivers import sshconfig
from lima.drivers.identity import Identity
from lima.errors import PermanentError
from tests.unit.cidata_fixtures import make_spec, with_ssh


@pytest.fixture(autouse=True)
def _no_ssh_version_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh.config's Ciphers line depends on `ssh -V` (a process); these tests are about
    the rest of the file, so they get an OpenSSH >= 8.1 on an AES host."""
    monkeypatch.setattr(sshconfig, "_preferred_ciphers",
                        lambda: "^aes128-gcm@openssh.com,aes256-gcm@openssh.com")


@pytest.fixture
def ident(tmp_path: Path) -> Identity:
    return Identity(private_key=tmp_path / "cfg dir" / "user", public_key="ssh-ed25519 AAAA lima")


def _config_map(text: str) -> tuple[str, dict[str, list[str]]]:
    lines = text.splitlines()
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, _, value = line.strip().partition(" ")
        out.setdefault(key, []).append(value)
    return lines[0], out


def test_ssh_config_has_lima_options(tmp_path: Path, ident: Identity) -> None:
    inst = tmp_path / "demo"
    path = sshconfig.write_ssh_config(make_spec(), inst, port=60022, identity=ident)
    assert path == inst / paths.SSH_CONFIG
    host, opts = _config_map(path.read_text())
    assert host == "Host lima-demo"
    assert opts["IdentityFile"] == [f'"{ident.private_key}"']
    assert opts["User"] == ["alice"]
    assert opts["Hostname"] == ["127.0.0.1"]
    assert opts["Port"] == ["60022"]
    assert opts["ControlPath"] == [f'"{inst / "ssh.sock"}"']
    for key, value in {
        "StrictHostKeyChecking": "no",
        "UserKnownHostsFile": "/dev/null",
        "NoHostAuthenticationForLocalhost": "yes",
        "PreferredAuthentications": "publickey",
        "Compression": "no",
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "ControlMaster": "auto",
        "ControlPersist": "yes",
    }.items():
        assert opts[key] == [value], key
    assert "ForwardAgent" not in opts


def test_forward_agent_and_x11_follow_the_spec(tmp_path: Path, ident: Identity) -> None:
    spec = with_ssh(make_spec(), forward_agent=True, forward_x11=True)
    _, opts = _config_map(sshconfig.ssh_config_text(spec, tmp_path, 1, ident))
    assert opts["ForwardAgent"] == ["yes"]
    assert opts["ForwardX11"] == ["yes"]
    assert "ForwardX11Trusted" not in opts


def test_dot_ssh_identities_added_when_loading_dot_ssh(
    tmp_path: Path, ident: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_a.pub").write_text("x")
    (home / ".ssh" / "id_a").write_text("x")
    (home / ".ssh" / "cert-only.pub").write_text("x")  # no private key: skipped
    monkeypatch.setenv("HOME", str(home))
    spec = with_ssh(make_spec(), load_dot_ssh_pubkeys=True)
    _, opts = _config_map(sshconfig.ssh_config_text(spec, tmp_path, 1, ident))
    assert opts["IdentityFile"] == [f'"{ident.private_key}"', f'"{home / ".ssh" / "id_a"}"']


def test_ssh_args_are_the_same_options(tmp_path: Path, ident: Identity) -> None:
    spec = make_spec()
    args = sshconfig.ssh_args(spec, tmp_path, 2222, ident)
    assert args[:2] == ["-F", "/dev/null"]
    pairs = args[2:]
    assert pairs[::2] == ["-o"] * (len(pairs) // 2)
    assert pairs[1::2] == sshconfig.ssh_options(spec, tmp_path, 2222, ident)
    assert "Port=2222" in pairs and "Hostname=127.0.0.1" in pairs


def test_too_long_control_path_is_refused(tmp_path: Path, ident: Identity) -> None:
    inst = tmp_path / ("x" * 120)
    with pytest.raises(PermanentError, match="too long"):
        sshconfig.ssh_options(make_spec(), inst, 1, ident)


def test_ansible_inventory_uses_ssh_config(tmp_path: Path) -> None:
    inst = tmp_path / "with space" / "demo"
    path = sshconfig.write_ansible_inventory(make_spec(), inst)
    assert path == inst / paths.ANSIBLE_INVENTORY
    doc = yaml.safe_load(path.read_text())
    # Lima's shape: group `lima`, the host by instance name, its user from ssh.config.
    assert list(doc) == ["lima"]
    host = doc["lima"]["hosts"]["demo"]
    assert host["ansible_host"] == "lima-demo"
    assert "ansible_user" not in host
    assert host["ansible_connection"] == "ssh"
    assert shlex.split(host["ansible_ssh_common_args"]) == ["-F", str(inst / "ssh.config")]
