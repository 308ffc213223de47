"""`limactl shell [flags] NAME [CMD...]` (and `lima CMD...`): a shell in a guest.

Flags are parsed with Lima's rules by lima.commands.shell_args; `--preserve-env` passes
what lima.shellenv lets through; `--start` starts a stopped instance through
`limactl start`'s path, and a suspended one is resumed that way without `--start`;
`--reconnect` ends the ssh ControlMaster first.

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
from lima.commands.shell_args import HELP, ShellArgs, UsageError, parse
from lima.drivers.sshconfig import LIVENESS_OPTIONS
from lima.errors import LimaError, NotFoundError
from lima.names import guest_hostname
from lima.shellenv import preserved

log = logging.getLogger(__name__)

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_TYPO_VERBS = ("create", "start", "delete", "shell")  # as Lima warns

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
    env: Sequence[str] = (),
) -> str:
    """The one string ssh runs in the guest.

    `workdir` must exist (else exit 1). Otherwise the host's `cwd` is entered when a mount
    covers it (falling back to the host's `home` when that is mounted, else the guest home),
    else the mounted host home (as Lima), else the login shell starts at the guest home.
    `shell` replaces the user's login shell ($SHELL in the guest). `env` (`NAME=value`
    words, from `--preserve-env`) is set for the login shell with `env`, as Lima does, so
    the guest's profile can still override it.
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
    prefix = "".join(f"{shlex.quote(assignment)} " for assignment in env)
    script = f"exec env {prefix}{sh} -l" if env else f"exec {sh} -l"
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
    from lima.drivers import procs, qmp, sshprobe
    from lima.errors import TemporaryError

    if procs.hostagent_pid(inst_dir) is None and procs.qemu_pid(inst_dir) is None:
        return f"instance {name} stopped while the shell ran; run `limactl start {name}`"
    state = qmp.query_status(inst_dir / paths.QMP_SOCK)
    if state is not None and state != _RUNNING:
        why = f"qemu reports the guest as {state}"
    else:
        try:
            sshprobe.wait_banner(port, deadline=time.monotonic() + BANNER_PROBE)
        except TemporaryError:
            why = f"a new connection got no ssh banner within {BANNER_PROBE:g} s"
        else:
            return None
    return (
        f"instance {name} does not answer over ssh ({why}); the guest is hung or paused. "
        f"Run `limactl stop -f {name}` to stop it, then `limactl start {name}`"
    )


def _master_alive(sock: Path) -> bool:
    """Whether an ssh ControlMaster still listens on `sock`."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def exit_master(name: str, inst_dir: Path, port: int) -> None:
    """`--reconnect`: end the instance's ssh ControlMaster (`ssh -O exit`), so the shell
    opens a fresh connection. A socket whose master already died is removed, as Lima does."""
    from lima.drivers import runner

    sock = inst_dir / paths.SSH_SOCK
    if not sock.exists():
        return
    log.info("Exiting ssh session for the instance `%s`", name)
    ssh = os.environ.get("SSH") or "ssh"
    config = inst_dir / paths.SSH_CONFIG
    if config.exists():
        argv = [ssh, "-F", str(config), "-O", "exit", "-p", str(port), guest_hostname(name)]
    else:
        argv = [ssh, "-o", f"ControlPath={sock}", "-O", "exit", "-p", str(port), "127.0.0.1"]
    result = runner.run(argv, check=False, timeout=30)
    if result.returncode == 0:
        return
    if _master_alive(sock):
        raise LimaError(f"could not end the ssh session of instance `{name}`: "
                        f"{result.stderr.strip() or f'ssh exited {result.returncode}'}")
    sock.unlink(missing_ok=True)
    log.warning("Removed stale ssh control socket for the instance `%s` after the master "
                "had already exited", name)


def start_instance(name: str) -> None:
    """`--start`: start a stopped instance the way `limactl start NAME` does (progress on
    stderr, so stdout stays the guest command's)."""
    from lima.commands import lifecycle
    from lima.commands.diff import plan_instance

    resolved = lifecycle.load_stored(name)
    generation = plan_instance(name, resolved).generation
    actions = lifecycle.converge(name, "running", spec=resolved.spec, generation=generation,
                                 verb="start")
    if actions:
        lifecycle.show_message(name)


def _ask_to_start() -> bool:
    """Lima's question when a terminal user opens a shell on a stopped instance."""
    if not sys.stdin.isatty():
        return False
    return click.confirm("Do you want to start the instance now?", default=True, err=True)


def ensure_running(name: str, inst_dir: Path, start: bool | None, tty: bool) -> None:
    """Refuse a stopped instance as Lima does, or start it (`--start`, or yes to the
    question asked when `--tty` and `--start` was not given). A suspended instance is
    resumed without asking, with a line on stderr, unless `--start=false` was given."""
    from lima.drivers import store

    status = store.inspect_processes(name, inst_dir).status
    if status not in (store.STATUS_STOPPED, store.STATUS_SUSPENDED):
        return
    if status == store.STATUS_SUSPENDED and start is not False:
        # A suspended instance wakes transparently (no --start needed): resuming keeps the
        # guest as it was, which is what a shell into it expects; a `--start=false` refuses.
        log.info("Instance `%s` is suspended; resuming it", name)
        start_instance(name)
        return
    start_now = bool(start)
    if tty and start is None:
        start_now = _ask_to_start()
    if not start_now:
        if status == store.STATUS_SUSPENDED:
            raise LimaError(f"instance `{name}` is suspended, run `limactl start {name}` "
                            "to resume the instance")
        raise LimaError(f"instance `{name}` is stopped, run `limactl start {name}` "
                        "to start the instance")
    start_instance(name)


_LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
               "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
               "fatal": logging.CRITICAL, "panic": logging.CRITICAL}


def _global_flags(parsed: ShellArgs) -> bool:
    """Apply the global flags given after `shell`; return `--tty` (Lima's: ask questions;
    default: stdout is a terminal)."""
    level = str(parsed.get("log-level", ""))
    if level:
        if level.lower() not in _LOG_LEVELS:
            raise UsageError(f'not a valid logrus Level: "{level}"')
        logging.getLogger().setLevel(_LOG_LEVELS[level.lower()])
    elif parsed.get("debug"):
        logging.getLogger().setLevel(logging.DEBUG)
    log_format = str(parsed.get("log-format", "text"))
    if log_format != "text":
        raise UsageError(f"--log-format={log_format} is not supported by `limactl shell`")
    if parsed.get("sync"):
        raise UsageError("--sync is not supported by limapy's `limactl shell` (in Lima it "
                         "copies a host directory to the guest and back on exit); copy it "
                         "with `limactl copy -r DIR INSTANCE:DIR` instead")
    if parsed.given("tty") and parsed.given("yes"):
        raise UsageError("cannot use both --tty and --yes flags at the same time")
    if parsed.given("yes"):
        log.warning("--yes flag is deprecated (--tty=false is still supported and works in "
                    "the same way. Also consider using --start)")
        return not parsed.get("yes")
    if parsed.given("tty"):
        return bool(parsed.get("tty"))
    return sys.stdout.isatty()


def wants_pty() -> bool:
    """Whether ssh gets `-t`: when stdin and stdout are terminals (Lima's `--tty` does not
    decide this; with stdin not a terminal ssh would not allocate one anyway)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


class _RawArgs(click.Command):
    """Hands every argument to the callback as given: Lima's flag rules are in shell_args."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["argv"] = list(args)
        return []


@click.command(cls=_RawArgs, add_help_option=False, help=HELP,
               short_help="Execute shell in Lima")
def shell(argv: list[str]) -> int:
    """`limactl shell [flags] INSTANCE [COMMAND...]`."""
    parsed = parse(argv)
    if parsed.get("help"):
        click.echo(HELP, nl=False)
        return 0
    tty = _global_flags(parsed)
    name, args = parsed.instance, parsed.command
    if args and args[0] in _TYPO_VERBS:
        log.warning("Perhaps you meant `limactl %s`?", " ".join(args))
    inst_dir = paths.instance_dir(name)
    if not (inst_dir / paths.LIMA_YAML).exists():
        raise NotFoundError(f"instance `{name}` does not exist, run `limactl create {name}` "
                            "to create a new instance")
    start = parsed.get("start") if parsed.given("start") else None
    ensure_running(name, inst_dir, None if start is None else bool(start), tty)
    port = ssh_port(name, inst_dir)
    if parsed.get("reconnect"):
        exit_master(name, inst_dir, port)
    env = preserved(dict(os.environ)) if parsed.get("preserve-env") else []
    script = remote_script(args, workdir=str(parsed.get("workdir")) or None, cwd=_host_cwd(),
                           mounts=_mounts(name), shell=str(parsed.get("shell")) or None,
                           home=os.path.expanduser("~"), env=env)
    has_config = (inst_dir / paths.SSH_CONFIG).exists()
    argv = ssh_argv(name, inst_dir, port=port, script=script,
                    tty=wants_pty(),
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
