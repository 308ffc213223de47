"""`limactl shell [--workdir D] [--shell S] NAME [CMD...]` (and `lima CMD...`): a shell in a guest.

Reads the ssh port from the host agent (ha.sock), builds the system `ssh` command with the
instance's options (`-F <inst>/ssh.config lima-NAME`: ControlMaster on ssh.sock, plus
`sshconfig.LIVENESS_OPTIONS` so ssh gives up on a guest that stopped answering). The argv
and the remote script are built by pure functions (`remote_script`, `ssh_argv`),
unit-tested.

ssh runs as a child in our process group, on our terminal, and its exit status is passed
on. It is not exec'd, so that a failure can be explained: when ssh exits 255 (its "could
not connect / lost the connection", which a remote command or `~.` can also produce),
`diagnose_ssh_failure` asks qemu and the guest's sshd, and a guest that does not answer
gets a message saying so and what to do. Exec was tried first: on a paused guest an
interactive session then ended after ~20 s with status 255 and nothing on the terminal
(every session is a client of the ControlPersist master, and with LogLevel=ERROR a
client whose master timed out prints nothing). Terminal behaviour stays ssh's: keys
reach ssh through the shared process group (in raw mode they are plain bytes anyway),
signals sent to limactl alone are passed on, and job control works because limactl
stops with ssh on Ctrl-Z (ssh's own `~^Z` is refused for master clients).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from lima import paths
from lima.drivers.sshconfig import LIVENESS_OPTIONS
from lima.errors import LimaError, NotFoundError
from lima.names import guest_hostname

log = logging.getLogger(__name__)

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_TYPO_VERBS = ("create", "start", "stop", "delete", "shell")

# (host location, guest mount point)
MountPair = tuple[str, str]

SSH_FAILED = 255  # ssh's exit status when it could not connect or lost the connection
# How long a guest that qemu reports running gets to send an ssh banner once ssh failed:
# a healthy sshd answers a fresh connection within a second or two even under TCG (qemu
# accepts the connection for the guest, so only the banner tells).
BANNER_PROBE = 3.0
# The qemu run state (QMP query-status) in which the guest's CPUs run; in any other
# (paused, guest-panicked, internal-error, shutdown, ...) it cannot answer at all.
_RUNNING = "running"


class ShellConnectionError(LimaError):
    """ssh failed because the guest does not answer or the instance went away."""

    exit_code = SSH_FAILED


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
    home: str | None = None,
) -> str:
    """The one string ssh runs in the guest.

    `workdir` must exist (else exit 1). Otherwise the host's `cwd` is entered when a mount
    covers it (falling back to the host's `home` when that is mounted, else the guest home),
    else the mounted host home (as Lima), else the login shell starts at the guest home.
    `shell` replaces the user's login shell ($SHELL in the guest).
    """
    guest_home = map_to_guest(home, mounts) if home else None
    if workdir:
        cd = f"cd {shlex.quote(workdir)} || exit 1"
    else:
        guest_dir = map_to_guest(cwd, mounts) if cwd else None
        fallback = f"cd {shlex.quote(guest_home)}" if guest_home else "cd ~"
        if guest_dir:
            cd = f"cd {shlex.quote(guest_dir)} || {fallback}"
        else:
            cd = f"cd {shlex.quote(guest_home)} || cd ~" if guest_home else ""
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
    # Given on the command line too (it beats ssh.config), so an ssh.config written before
    # these options existed cannot leave a shell waiting forever on a hung guest.
    for opt in LIVENESS_OPTIONS:
        argv += ["-o", opt]
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
    except LimaError as exc:
        log.debug("no mounts for the working directory: %s", exc)
        return []
    return [(m.location, m.mount_point) for m in spec.mounts]


def _user(name: str) -> str | None:
    try:
        from lima.schemas import load_instance

        return load_instance(name).spec.user.name
    except LimaError:
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


def run_ssh_child(argv: Sequence[str]) -> tuple[int, bool]:
    """Run ssh as a child on our stdin/stdout/stderr; return (exit status, interrupted).

    The child stays in our process group, so keys typed at a terminal (Ctrl-C, Ctrl-\\)
    reach ssh directly; we only must not die of them. Signals sent to us alone are passed
    on, so `timeout 10 limactl shell ...` ends ssh too (ssh getting a key's signal twice
    is harmless). SIGTSTP keeps its default, so Ctrl-Z stops us along with ssh. A child
    killed by a signal is reported as a shell would (128 + signal). `interrupted` says
    that a signal was received, so an exit status of 255 is not the guest's fault.
    """
    from lima.drivers import runner

    proc = runner.spawn(argv, stdin=None, stdout=None, stderr=None)
    received: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        received.append(signum)
        proc.send_signal(signum)

    relayed = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, relay) for sig in relayed}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return (128 - rc if rc < 0 else rc), bool(received)


def diagnose_ssh_failure(name: str, inst_dir: Path, port: int) -> str | None:
    """Why ssh exited 255, when the guest is to blame; None when the guest answers (ssh
    already said what failed, or the remote command itself exited 255).

    qemu's run state answers at once for a paused, crashed or shut-down guest; only when
    qemu says "running" (or cannot be asked) does a fresh connection wait for a banner.
    """
    from lima.drivers import procs, qmp
    from lima.drivers import ssh as guest_ssh
    from lima.errors import TemporaryError

    if procs.hostagent_pid(inst_dir) is None and procs.qemu_pid(inst_dir) is None:
        return f"instance {name} stopped while the shell ran; run `limactl start {name}`"
    state = qmp.query_status(inst_dir / paths.QMP_SOCK)
    if state is not None and state != _RUNNING:
        why = f"qemu reports the guest as {state}"
    else:
        try:
            guest_ssh.wait_banner(port, deadline=time.monotonic() + BANNER_PROBE)
        except TemporaryError:
            why = f"a new connection got no ssh banner within {BANNER_PROBE:g} s"
        else:
            return None
    return (
        f"instance {name} does not answer over ssh ({why}); the guest is hung or paused. "
        f"Run `limactl stop -f {name}` to stop it, then `limactl start {name}`"
    )


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
) -> int:
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
                           mounts=_mounts(name), shell=shell_ or None,
                           home=os.path.expanduser("~"))
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    has_config = (inst_dir / paths.SSH_CONFIG).exists()
    argv = ssh_argv(name, inst_dir, port=port, script=script, tty=tty,
                    user=None if has_config else _user(name),
                    ssh=os.environ.get("SSH") or "ssh",
                    colorterm="COLORTERM" in os.environ)
    log.debug("run: %s", shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    rc, interrupted = run_ssh_child(argv)
    if rc == SSH_FAILED and not interrupted:
        why = diagnose_ssh_failure(name, inst_dir, port)
        if why:
            raise ShellConnectionError(why)
    return rc
