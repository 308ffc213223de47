"""`limactl shell` and ssh.config agree on the host, and both carry the liveness options.

ssh.config says `Host lima-NAME` (with '.' and '_' as '-'); `limactl shell` must ask ssh
for exactly that host, or no Host block applies (no Hostname, Port, User or key) and the
shell fails for every such name. `ssh -G` (config evaluation only, no connection) is the
judge of what ssh would really use.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lima import paths
from lima.commands.shell import ssh_argv
from lima.drivers import sshconfig
from lima.drivers.identity import Identity
from tests.unit.cidata_fixtures import make_spec

# `ssh -G` evaluates the generated ssh.config without connecting: ssh's own reading of it.
pytestmark = pytest.mark.processes

NAMES = ["my_vm", "a.b", "x-y", "my_vm.1", "dev"]


@pytest.fixture
def ident(tmp_path: Path) -> Identity:
    return Identity(private_key=tmp_path / "key", public_key="ssh-ed25519 AAAA lima")


def _ssh_g(argv: list[str]) -> dict[str, str]:
    """What ssh would use for this command line: `ssh -G` in place of the connection."""
    dest = argv.index("--") - 1
    cmd = [*argv[1:dest], "-G", argv[dest]]
    out = subprocess.run(["ssh", *cmd], capture_output=True, text=True, timeout=10, check=True)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


@pytest.mark.parametrize("name", NAMES)
def test_shell_asks_for_the_host_ssh_config_defines(
    tmp_path: Path, ident: Identity, name: str
) -> None:
    inst = tmp_path / name
    config = sshconfig.write_ssh_config(make_spec(name=name), inst, port=60022, identity=ident)
    host_line = config.read_text().splitlines()[0]
    argv = ssh_argv(name, inst, port=60022, script="true", tty=False)
    assert host_line == f"Host {argv[argv.index('--') - 1]}"
    assert "_" not in host_line and "." not in host_line.removeprefix("Host ")

    resolved = _ssh_g(argv)
    # Only a matching Host block supplies these; without one ssh would try to resolve the
    # host name itself and log in as the local user without the instance's key.
    assert resolved["hostname"] == "127.0.0.1"
    assert resolved["user"] == "alice"
    assert resolved["identityfile"] == str(ident.private_key)
    assert resolved["controlpath"] == str(inst / paths.SSH_SOCK)


def test_liveness_options_in_ssh_config(tmp_path: Path, ident: Identity) -> None:
    text = sshconfig.ssh_config_text(make_spec(), tmp_path, 60022, ident)
    assert "  ConnectTimeout 10\n" in text
    assert "  ServerAliveInterval 5\n" in text
    assert "  ServerAliveCountMax 3\n" in text
    # ssh.config on its own (as `ssh -F ssh.config lima-demo` uses it) gives them to ssh.
    (tmp_path / paths.SSH_CONFIG).write_text(text)
    out = subprocess.run(["ssh", "-F", str(tmp_path / paths.SSH_CONFIG), "-G", "lima-demo"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    assert "connecttimeout 10\n" in out
    assert "serveraliveinterval 5\n" in out
    assert "serveralivecountmax 3\n" in out


@pytest.mark.parametrize("with_config", [True, False])
def test_shell_passes_liveness_options(tmp_path: Path, with_config: bool) -> None:
    if with_config:
        # An ssh.config written before the options existed: the command line adds them.
        (tmp_path / paths.SSH_CONFIG).write_text("Host lima-old\n  Hostname 127.0.0.1\n")
    argv = ssh_argv("old", tmp_path, port=2222, script="true", tty=True, user="alice")
    resolved = _ssh_g(argv)
    assert resolved["connecttimeout"] == "10"
    assert resolved["serveraliveinterval"] == "5"
    assert resolved["serveralivecountmax"] == "3"


def test_a_hung_guest_is_given_up_within_about_30_s() -> None:
    # The slowest way ssh notices a silent guest (a master's asks run out, then a
    # connection of its own waits for a banner), plus the banner probe `limactl shell`
    # runs afterwards, stays around half a minute; and a healthy but slow guest has
    # many seconds to answer each ask.
    from lima.commands.shell import BANNER_PROBE

    assert sshconfig.GIVE_UP_AFTER + BANNER_PROBE <= 35
    assert sshconfig.SERVER_ALIVE_INTERVAL * sshconfig.SERVER_ALIVE_COUNT_MAX >= 15
