"""The driver's side of the host agent: start one, stop one (never hanging on a stuck one).

lima.drivers.instance calls `start_hostagent` (a new agent, or one that attaches to a
running qemu) and `stop_hostagent` (graceful power-down first; a kill only when the guest
does not obey within the deadline, or when the user forces it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lima import paths
from lima.drivers import ports, procs, runner
from lima.drivers.hostagent.api import hostagent_info
from lima.drivers.hostagent.daemon import qmp_powerdown
from lima.drivers.hostagent.events import (
    QEMU_STDERR,
    append_event,
    make_event,
    read_events,
    tail_lines,
)
from lima.drivers.virtiofs import DaemonCommand
from lima.errors import BusyError, LimaError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

# Host agents this process started: kept so they can be reaped (no zombies in a long-lived
# controller, and a zombie would look alive to a pid check). Workers of one process share
# it, hence the lock.
_CHILDREN: dict[int, runner.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def _reap() -> None:
    with _CHILDREN_LOCK:
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]


pick_ssh_port = ports.pick_ssh_port  # moved to lima.drivers.ports; callers still import it here




def start_hostagent(
    name: str,
    *,
    iid: str,
    ssh_port: int,
    qemu_argv: Sequence[str] | None = None,
    boot_timeout: float = 600.0,
    stop_timeout: float = 60.0,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    attach: bool = False,
    virtiofsd: Sequence[DaemonCommand] = (),
    resume: bool = False,
) -> int:
    """Start `limactl hostagent NAME` in its own session; return its PID once ha.sock answers.

    ha.stdout.log and ha.stderr.log start empty, as in Lima. `qemu_argv` overrides the
    command built from the spec (tests use a dummy). `attach`: the new agent takes over
    the instance's running qemu (see HostAgent). `virtiofsd`: the daemons the agent starts
    before qemu (lima.drivers.virtiofs.daemon_commands). Raises TemporaryError when the agent
    exits early or does not answer within `timeout` seconds (it is killed then).
    """
    _reap()
    inst_dir = paths.instance_dir(name)
    if hostagent_info(inst_dir) is not None:
        raise BusyError(f"instance {name!r} already has a running host agent")
    argv: list[str] = [
        sys.executable, "-m", "lima.cli", "hostagent",
        "--iid", iid, "--ssh-port", str(ssh_port),
        "--boot-timeout", str(boot_timeout), "--stop-timeout", str(stop_timeout),
        *extra_args,
    ]
    if resume:
        argv.append("--resume")
    if attach:
        argv.append("--attach")
    elif qemu_argv is not None:
        argv_file = inst_dir / "ha.qemu-argv.json"
        argv_file.write_text(json.dumps(list(qemu_argv)))
        argv += ["--qemu-argv-json", str(argv_file)]
    if virtiofsd and not attach:
        daemons_file = inst_dir / paths.HA_VIRTIOFSD
        daemons_file.write_text(json.dumps([c.to_json() for c in virtiofsd]))
        argv += ["--virtiofsd-json", str(daemons_file)]
    argv.append(name)
    for stale in (paths.HA_SOCK,):
        with contextlib.suppress(FileNotFoundError):
            (inst_dir / stale).unlink()
    (inst_dir / paths.HA_STDOUT).write_bytes(b"")
    stderr_path = inst_dir / paths.HA_STDERR
    # Events are written by the daemon itself; stray output on its stdout lands in the log.
    spawned = time.time()
    with open(stderr_path, "wb") as err:
        proc = runner.spawn(argv, stdout=err, stderr=err, cwd=inst_dir, new_session=True)
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc
    deadline = time.monotonic() + timeout
    while hostagent_info(inst_dir, timeout=1.0) is None:
        if proc.poll() is not None:
            raise _early_exit_error(inst_dir, proc.returncode, stderr_path, spawned)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TemporaryError(f"host agent did not answer on ha.sock within {timeout:g} s\n"
                                 f"{tail_lines(stderr_path)}")
        time.sleep(0.05)
    return proc.pid


def _early_exit_error(inst_dir: Path, rc: int, stderr_path: Path, spawned: float) -> LimaError:
    """Why an agent died before ha.sock answered: the errors its events carried (e.g.
    qemu's refusal, which it can report in a few ms, before the first poll here) and
    qemu's stderr. Permanent when qemu refused its configuration: a retry fails alike."""
    # Lazily: the driver imports this module.
    from lima.drivers.instance import qemu_refused

    errors: list[str] = []
    for event in read_events(inst_dir):
        for err in event["status"].get("errors") or []:
            if str(err) not in errors:
                errors.append(str(err))
    qemu_stderr = inst_dir / QEMU_STDERR
    try:
        # Older than this agent: a previous boot's words, not why this one failed.
        fresh = qemu_stderr.stat().st_mtime >= spawned
    except OSError:
        fresh = False
    qemu_said = tail_lines(qemu_stderr, 5).strip() if fresh else ""
    lines = [f"host agent exited with status {rc} before it answered"
             + (f": {'; '.join(errors)}" if errors else "")]
    if qemu_said and not any(qemu_said.splitlines()[-1] in e for e in errors):
        lines.append(f"qemu said: {qemu_said}")
    if not errors:
        # No reason in its events (e.g. it crashed): its own log is all there is.
        lines.append(tail_lines(stderr_path))
    message = "\n".join(line for line in lines if line)
    if qemu_refused(tuple(errors)):
        return PermanentError(message)
    return TemporaryError(message)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap()
        if not procs.pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _stopped(pid: int) -> bool:
    """A process stopped by a signal (SIGSTOP, a debugger): it cannot act on SIGTERM."""
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        return stat[stat.rfind(")") + 2:].startswith(("T", "t"))
    return False


# How long a host agent may take to begin its shutdown before the caller powers the guest
# down itself: the agent's main loop notices SIGTERM within 50 ms.
AGENT_GRACE = 5.0
# After a graceful attempt failed: how long the guest gets for ACPI power-down through
# QMP directly, before qemu is killed.
POWERDOWN_GRACE = 15.0


def reload_hostagent(inst_dir: Path) -> bool:
    """Tell the instance's running host agent that lima.yaml changed live (SIGHUP: it
    applies the new portForwards without a restart). False when no agent runs."""
    pid = procs.hostagent_pid(inst_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


def stop_hostagent(inst_dir: Path, *, timeout: float = 90.0, force: bool = False) -> None:
    """Stop the instance's host agent and its qemu; returns within about `timeout` s.

    Graceful: SIGTERM the agent, which powers the guest down (QMP system_powerdown) and
    exits. When the agent cannot do it (stopped by a signal, hung, or gone while qemu runs)
    the guest is powered down through QMP from here, and only when that fails within
    POWERDOWN_GRACE is qemu killed; every wait is capped, so a stuck agent never makes
    stop hang. `force`: SIGKILL the agent's process group and this instance's qemu at once
    (both PIDs checked against /proc first, so a recycled PID is never signalled).
    Afterwards the stale files are removed and the exiting event the agent could not write
    is appended.
    """
    deadline = time.monotonic() + max(timeout, AGENT_GRACE + POWERDOWN_GRACE)
    agent = procs.hostagent_pid(inst_dir)
    killed_agent = False
    if agent is not None and not force:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGTERM)
        # The agent gets the whole budget less what the fallbacks need, but a stopped
        # agent none of it.
        agent_deadline = deadline - POWERDOWN_GRACE
        while not _wait_gone(agent, min(AGENT_GRACE, max(0.0, agent_deadline - time.monotonic()))):
            if _stopped(agent) or time.monotonic() >= agent_deadline:
                log.warning("host agent (pid %d) %s; powering the guest down from here",
                            agent, "is stopped" if _stopped(agent) else "did not finish")
                _powerdown_direct(inst_dir, max(1.0, min(POWERDOWN_GRACE,
                                                         deadline - time.monotonic())))
                _kill_agent(agent)
                killed_agent = True
                break
    elif agent is not None:
        _kill_agent(agent)
        killed_agent = True
    elif not force and procs.qemu_pid(inst_dir) is not None:
        # A qemu without its agent: still a guest with a file system to flush.
        _powerdown_direct(inst_dir, max(1.0, min(POWERDOWN_GRACE, deadline - time.monotonic())))
    qemu_gone = procs.kill_qemu(inst_dir, force=True)
    stale = [paths.HA_PID, paths.HA_SOCK] + ([paths.QEMU_PID] if qemu_gone else [])
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            (inst_dir / name).unlink()
    events = read_events(inst_dir) if agent is not None and killed_agent else []
    if events and not events[-1]["status"].get("exiting"):
        port = events[-1]["status"].get("sshLocalPort", 0)
        append_event(inst_dir, make_event(ssh_port=int(port or 0), exiting=True,
                                          errors=["host agent was killed"]))


def _powerdown_direct(inst_dir: Path, timeout: float) -> bool:
    """QMP system_powerdown from this process; whether qemu is gone within `timeout`."""
    try:
        return qmp_powerdown(inst_dir, timeout)
    except (LimaError, OSError) as exc:
        log.warning("QMP powerdown failed: %s", exc)
        return procs.qemu_pid(inst_dir) is None


def _kill_agent(agent: int) -> None:
    """SIGKILL a host agent (its process group: its helpers go with it; qemu is handled by
    the caller, by PID, as qemu may have been re-attached from an earlier agent)."""
    doomed = [agent, *_children_of(agent)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # The agent leads its own session: its group holds qemu and its helpers.
        if os.getpgid(agent) == agent:
            os.killpg(agent, signal.SIGKILL)
        else:
            os.kill(agent, signal.SIGKILL)
    for pid in doomed:
        _wait_gone(pid, 5.0)

