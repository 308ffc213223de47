"""`limactl shell [--workdir D] [--shell S] NAME [CMD...]` (and `lima CMD...`): a shell in a guest.

Reads the ssh port from the host agent (ha.sock), builds the system `ssh` command with the
instance's options (`-F <inst>/ssh.config lima-NAME`: ControlMaster on ssh.sock) and execs
it, so terminals, signals and exit codes behave as with plain ssh. The argv and the remote
script are built by pure functions (`remote_script`, `ssh_argv`), unit-tested.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from lima import hostprograms, paths
from lima.errors import LimaError, NotFoundError
from lima.names import guest_hostname

log = logging.getLogger(__name__)

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_TYPO_VERBS = ("create", "start", "stop", "delete", "shell")

# (host location, guest mount point)
MountPair = tuple[str, str]


def map_to_guest(cwd: str, mounts: Sequence[MountPair]) -> str | None:
    """The guest path of host directory `cwd` when a mount covers it (deepest mount wins)."""
    cwd = os.path.normpath(cwd)
    for location, mount_point in sorted(mounts, key=lambda m: -len(m[0])):
        loc = os.path.normpath(location)
        if cwd == loc:
            return mount_point
        if cwd.startswith(loc.rstrip("/") + "/"):
            return mount_point.rstrip("/") + "/" + cwd[len(loc.rstrip("/")) + 1 :]
    return None


def quote_command(args: Sequence[str]) -> str:
    """Quote CMD words for the guest shell; leading `NAME=value` words stay assignments."""
    words = []
    assignments = True
    for arg in args:
        if assignments and _ENV_ASSIGNMENT.match(arg):
            name, value = arg.split("=", 1)
            words.append(f"{name}={shlex.quote(value)}")
        else:
            assignments = False
            words.append(shlex.quote(arg))
    return " ".join(words)


def remote_script(
    command: Sequence[str],
    *,
    workdir: str | None = None,
    cwd: str | None = None,
    mounts: Sequence[MountPair] = (),
    shell: str | None = None,
) -> str:
    """The one string ssh runs in the guest.

    `workdir` must exist (else exit 1). Otherwise the host's `cwd` is entered when a mount
    covers it (falling back to the home directory), else the login shell starts at home.
    `shell` replaces the user's login shell ($SHELL in the guest).
    """
    if workdir:
        cd = f"cd {shlex.quote(workdir)} || exit 1"
    else:
        guest_dir = map_to_guest(cwd, mounts) if cwd else None
        cd = f"cd {shlex.quote(guest_dir)} || cd ~" if guest_dir else ""
    sh = shlex.quote(shell) if shell else '"$SHELL"'
    script = f"exec {sh} -l"
    if command:
        script += " -c " + shlex.quote(quote_command(command))
    return f"{cd} ; {script}" if cd else script


def ssh_argv(
    name: str,
    inst_dir: Path,
    *,
    port: int,
    script: str,
    tty: bool,
    user: str | None = None,
    ssh: str = "ssh",
    colorterm: bool = False,
) -> list[str]:
    """The full `ssh` command line; uses ssh.config when the instance has one."""
    config = inst_dir / paths.SSH_CONFIG
    if config.exists():
        argv = [ssh, "-F", str(config)]
        host = guest_hostname(name)
    else:
        # Same options ssh.config would carry (Lima's defaults).
        argv = [ssh, "-i", str(paths.user_identity()),
                "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "NoHostAuthenticationForLocalhost=yes",
                "-o", "PreferredAuthentications=publickey",
                "-o", "BatchMode=yes",
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={inst_dir / paths.SSH_SOCK}",
                "-o", "ControlPersist=yes"]
        if user:
            argv += ["-o", f"User={user}"]
        host = "127.0.0.1"
    if tty:
        argv.append("-t")
    if colorterm:
        argv += ["-o", "SendEnv=COLORTERM"]
    return [*argv, "-o", "LogLevel=ERROR", "-p", str(port), host, "--", script]


def _config_port(inst_dir: Path) -> int | None:
    try:
        text = (inst_dir / paths.SSH_CONFIG).read_text()
    except OSError:
        return None
    match = re.search(r"^\s*Port\s+(\d+)\s*$", text, re.MULTILINE | re.IGNORECASE)
    return int(match.group(1)) if match else None


def ssh_port(name: str, inst_dir: Path) -> int:
    """The host port of the guest's sshd, from the running host agent."""
    from lima.drivers import procs
    from lima.drivers.hostagent import hostagent_info

    info = hostagent_info(inst_dir)
    port = info.get("sshLocalPort") if info else None
    if isinstance(port, int) and port > 0:
        return port
    if procs.hostagent_pid(inst_dir) is not None:
        # The agent runs but did not answer in time: ssh.config has the same port.
        fallback = _config_port(inst_dir)
        if fallback:
            return fallback
    raise LimaError(f"instance {name} is not running; run `limactl start {name}`")


def _mounts(name: str) -> list[MountPair]:
    try:
        from lima.schemas import load_instance

        spec = load_instance(name).spec
    except (LimaError, ImportError) as exc:
        log.debug("no mounts for the working directory: %s", exc)
        return []
    return [(m.location, m.mount_point) for m in spec.mounts]


def _user(name: str) -> str | None:
    try:
        from lima.schemas import load_instance

        return load_instance(name).spec.user.name
    except (LimaError, ImportError):
        return None


def _host_cwd() -> str | None:
    """The logical working directory ($PWD when it is the same directory), as a shell has it."""
    try:
        real = os.getcwd()
    except OSError:
        return None
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samefile(pwd, real):
                return pwd
        except OSError:
            pass
    return real


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--workdir", envvar="LIMA_WORKDIR", default=None,
              help="Working directory in the guest (default: the host's, when mounted).")
@click.option("--shell", "shell_", envvar="LIMA_SHELL", default=None,
              help="Shell interpreter, e.g. /bin/bash.")
@click.option("--tty/--no-tty", default=None,
              help="Force or refuse a terminal (default: when stdin and stdout are ttys).")
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def shell(
    workdir: str | None, shell_: str | None, tty: bool | None, name: str,
    command: tuple[str, ...],
) -> None:
    """Execute a shell (or COMMAND) in instance NAME over ssh."""
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if args and args[0] in _TYPO_VERBS:
        click.echo(f"warning: perhaps you meant `limactl {' '.join(args)}`?", err=True)
    inst_dir = paths.instance_dir(name)
    if not (inst_dir / paths.LIMA_YAML).exists():
        raise NotFoundError(
            f"instance {name!r} does not exist, run `limactl create {name}` to create it"
        )
    port = ssh_port(name, inst_dir)
    script = remote_script(args, workdir=workdir or None, cwd=_host_cwd(),
                           mounts=_mounts(name), shell=shell_ or None)
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    has_config = (inst_dir / paths.SSH_CONFIG).exists()
    argv = ssh_argv(name, inst_dir, port=port, script=script, tty=tty,
                    user=None if has_config else _user(name),
                    ssh=os.environ.get("SSH") or "ssh",
                    colorterm="COLORTERM" in os.environ)
    log.debug("exec: %s", shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        hostprograms.check_program(argv[0])
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise LimaError(f"cannot run {argv[0]}: {exc.strerror}") from exc
