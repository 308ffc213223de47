"""`limactl show-ssh [--format cmd|args|options|config] INSTANCE` (deprecated in Lima).

Called by `lima.cli` (lazily); `lima.commands.tunnel` reuses `instance_ssh`. The options
are the ones limapy writes into the instance's ssh.config (`sshconfig.ssh_options`, Lima's
order, Hostname and Port last), so the printed command logs in as `limactl shell` does.
The four output shapes are Lima's (pkg/sshutil Format), including its quoting: an option
holding a double quote is wrapped in single quotes for the shell.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import click

from lima import paths
from lima.errors import LimaError, NotFoundError

log = logging.getLogger(__name__)

FORMATS = ("cmd", "args", "options", "config")

_HELP = """Show the SSH command line (DEPRECATED; use `ssh -F` instead)

WARNING: 'limactl show-ssh' is deprecated.
Instead, use 'ssh -F $LIMA_HOME/INSTANCE/ssh.config lima-INSTANCE' .

\b
Formats:
  cmd (default)  the full ssh command line
  args           the same without "ssh" and the destination
  options        one KEY=VALUE ssh option per line
  config         a ~/.ssh/config "Host lima-INSTANCE" block

\b
To show the config file path:
  limactl ls --format='{{.SSHConfigFile}}' default
"""


@dataclass(frozen=True)
class InstanceSSH:
    """What it takes to reach an instance's sshd from the host."""

    name: str
    dir: Path
    hostname: str  # lima-NAME: ssh.config's Host
    port: int  # the host port forwarded to the guest's sshd (0: not known yet)
    options: list[str]  # KEY=VALUE, Lima's order, Hostname and Port last


def missing_instance(name: str) -> LimaError:
    """Lima's message for a verb given an instance that does not exist."""
    return NotFoundError(f"instance `{name}` does not exist, run `limactl create {name}` "
                         "to create a new instance")


def _port(inst_dir: Path, configured: int) -> int:
    """The running host agent's port, else the one ssh.config names, else the spec's."""
    from lima.drivers import procs
    from lima.drivers.hostagent.api import hostagent_info

    if procs.hostagent_pid(inst_dir) is not None:
        info = hostagent_info(inst_dir)
        port = info.get("sshLocalPort") if info else None
        if isinstance(port, int) and port > 0:
            return port
    try:
        text = (inst_dir / paths.SSH_CONFIG).read_text()
    except OSError:
        return configured
    match = re.search(r"^\s*Port\s+(\d+)\s*$", text, re.MULTILINE | re.IGNORECASE)
    return int(match.group(1)) if match else configured


def instance_ssh(name: str) -> InstanceSSH:
    """The ssh options of instance `name`; NotFoundError (Lima's message) when missing."""
    from lima import schemas
    from lima.drivers.identity import Identity
    from lima.drivers.sshconfig import ssh_options
    from lima.names import guest_hostname, instance_dir_for

    inst_dir = instance_dir_for(name)
    if not (inst_dir / paths.LIMA_YAML).is_file():
        raise missing_instance(name)
    spec = schemas.load_instance(name).spec
    port = _port(inst_dir, spec.ssh.local_port)
    # Only the private key's path goes into the options: no key is generated here.
    identity = Identity(private_key=paths.user_identity(), public_key="")
    options = ssh_options(spec, inst_dir, port, identity)
    return InstanceSSH(name, inst_dir, guest_hostname(name), port, options)


def _quote(option: str) -> str:
    return f"'{option}'" if '"' in option else option


def format_options(fmt: str, hostname: str, options: list[str]) -> str:
    """The text `show-ssh --format FMT` prints (pure; Lima's four shapes)."""
    for option in options:
        if "\r" in option or "\n" in option:
            raise LimaError(f"ssh option `{option}` contains a line break")
    args = " ".join(f"-o {_quote(o)}" for o in options)
    if fmt == "cmd":
        return f"ssh {args} {hostname}\n"
    if fmt == "args":
        return f"{args}\n"
    if fmt == "options":
        return "".join(f"{o}\n" for o in options)
    if fmt == "config":
        lines = [f"Host {hostname}\n"]
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise LimaError(f"unexpected option `{option}`")
            lines.append(f"  {key} {value}\n")
        return "".join(lines)
    raise LimaError(f"unknown format: `{fmt}`")


@click.command("show-ssh", help=_HELP)
@click.argument("instance")
@click.option("-f", "--format", "fmt", default="cmd", show_default=True,
              help="Format: " + ", ".join(FORMATS),
              shell_complete=lambda _c, _p, text: [f for f in FORMATS if f.startswith(text)])
def show_ssh(instance: str, fmt: str) -> None:
    ssh = instance_ssh(instance)
    log.warning("`limactl show-ssh` is deprecated. Instead, use `ssh -F %s %s`.",
                ssh.dir / paths.SSH_CONFIG, ssh.hostname)
    click.echo(format_options(fmt, ssh.hostname, ssh.options), nl=False)
