"""The virtiofsd daemons of a `mountType: virtiofs` instance, owned by its host agent.

`HostAgent` (daemon.py) calls `VirtiofsDaemons.start(commands, ...)` before it starts qemu
and `stop()` once qemu is gone, on every path out (qemu failed to start, exited, was
stopped, the agent failed). The commands come from lima.drivers.virtiofs.daemon_commands
(built by limactl and handed over in ha.virtiofsd.json). For each mount the agent binds the
vhost-user socket (virtiofsd-N.sock) itself and passes it as `--fd`, then waits until the
daemon says it waits for QEMU. Each daemon's stderr goes to the agent's log, prefixed
`virtiofsd-N`; its PID is in virtiofsd-N.pid while it runs. A daemon exits by itself when
qemu closes its socket; the agent also ends it by PID (SIGTERM, then SIGKILL) and removes
its socket and pid file. An agent that attaches to the running qemu of a dead one adopts
that one's daemons by their pid files (`adopt`), to end them the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lima.drivers import procs, runner
from lima.drivers.virtiofs import READY_LINE, DaemonCommand, with_fd
from lima.errors import LimaError
from lima.fsutil import atomic_write

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
PID_GLOB = "virtiofsd-*.pid"


@dataclass
class _Daemon:
    command: DaemonCommand
    proc: runner.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)  # its stderr, the last 20 lines
    stopping: bool = False

    @property
    def name(self) -> str:
        return f"virtiofsd-{self.command.index}"


class VirtiofsDaemons:
    """The running virtiofsd of each mount, in mount order."""

    def __init__(self) -> None:
        self.daemons: list[_Daemon] = []
        self.adopted: list[tuple[int, Path]] = []  # (pid, its pid file) of a dead agent's
        self._lock = threading.Lock()

    @property
    def pids(self) -> list[int]:
        return [d.proc.pid for d in self.daemons] + [pid for pid, _ in self.adopted]

    @classmethod
    def adopt(cls, inst_dir: Path) -> VirtiofsDaemons:
        """The daemons an earlier agent of this instance started, by their pid files (a
        PID that is no virtiofsd any more is not taken)."""
        out = cls()
        for pid_path in sorted(inst_dir.glob(PID_GLOB)):
            pid = procs.read_pid(pid_path)
            if pid is not None and _is_virtiofsd(pid):
                out.adopted.append((pid, pid_path))
            else:
                pid_path.unlink(missing_ok=True)
        if out.adopted:
            log.info("adopted the running virtiofsd: pids %s", out.pids)
        return out

    @classmethod
    def start(cls, commands: Sequence[DaemonCommand], *,
              timeout: float = START_TIMEOUT) -> VirtiofsDaemons:
        """Start them all and wait until each waits for QEMU; on any failure the ones
        already started are ended and LimaError names the mount and virtiofsd's words."""
        out = cls()
        try:
            for cmd in commands:
                out.daemons.append(_spawn(cmd))
            deadline = time.monotonic() + timeout
            for d in out.daemons:
                _wait_ready(d, deadline, timeout)
        except BaseException:
            out.stop()
            raise
        log.info("virtiofsd ready for %d mount(s): pids %s", len(out.daemons), out.pids)
        return out

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every daemon by its PID (they also exit when qemu goes) and remove the
        sockets. Safe to call more than once."""
        with self._lock:
            daemons, self.daemons = self.daemons, []
            adopted, self.adopted = self.adopted, []
        _stop_adopted(adopted, timeout)
        for d in daemons:
            d.stopping = True
            if d.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    d.proc.terminate()
        deadline = time.monotonic() + timeout
        for d in daemons:
            try:
                d.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except runner.TimeoutExpired:
                log.warning("%s (pid %d) ignores SIGTERM; killing it", d.name, d.proc.pid)
                d.proc.kill()
                d.proc.wait()
            for leftover in (d.command.socket, pid_file(d.command)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        if daemons:
            log.info("virtiofsd ended: pids %s", [d.proc.pid for d in daemons])


def _is_virtiofsd(pid: int) -> bool:
    argv = procs.cmdline(pid)
    return procs.pid_alive(pid) and bool(argv) and os.path.basename(argv[0]) == "virtiofsd"


def _stop_adopted(adopted: list[tuple[int, Path]], timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`, to daemons that are not our children."""
    for pid, _ in adopted:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid, pid_path in adopted:
        while procs.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_virtiofsd(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pid_path.unlink(missing_ok=True)
        Path(str(pid_path).removesuffix(".pid") + ".sock").unlink(missing_ok=True)


def pid_file(cmd: DaemonCommand) -> str:
    """virtiofsd-N.pid beside virtiofsd-N.sock."""
    return cmd.socket.removesuffix(".sock") + ".pid"


def _spawn(cmd: DaemonCommand) -> _Daemon:
    sock_path = Path(cmd.socket)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # left by a daemon of an earlier boot
    try:
        Path(cmd.location).mkdir(parents=True, exist_ok=True)  # Lima creates it too
    except OSError as exc:
        raise LimaError(f"virtiofsd for {cmd.location}: cannot create the directory: "
                        f"{exc}") from exc
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(1)
        argv = with_fd(cmd.argv, listener.fileno())
        try:
            # SIGPIPE stays ignored: a daemon serves qemu on after this agent died (its
            # successor attaches to qemu), when its stderr has no reader any more.
            proc = runner.spawn(argv, stdout=runner.DEVNULL, stderr=runner.PIPE,
                                pass_fds=(listener.fileno(),), keep_sigpipe_ignored=True)
        except runner.CommandError as exc:
            sock_path.unlink(missing_ok=True)
            raise LimaError(f"virtiofsd for {cmd.location} did not start: {exc}") from exc
    except OSError as exc:
        sock_path.unlink(missing_ok=True)
        raise LimaError(f"cannot make the vhost-user socket {sock_path}: {exc}") from exc
    finally:
        listener.close()  # the daemon holds its own copy
    daemon = _Daemon(cmd, proc)
    atomic_write(Path(pid_file(cmd)), f"{proc.pid}\n")
    threading.Thread(target=_pump, args=(daemon,), name=daemon.name, daemon=True).start()
    return daemon


def _pump(d: _Daemon) -> None:
    """Its stderr -> our log; notices the ready line; reports a daemon that dies early."""
    assert d.proc.stderr is not None
    for raw in d.proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if not line:
            continue
        d.lines[:] = [*d.lines[-19:], line]
        log.info("%s[stderr]: %s", d.name, line)
        if READY_LINE in line:
            d.ready.set()
    rc = d.proc.wait()
    if not d.stopping and d.ready.is_set() and rc != 0:
        # (It exits with 0 when qemu closes the socket: the guest is going away.)
        log.error("%s (pid %d) exited with status %d: %s is no longer shared with the "
                  "guest", d.name, d.proc.pid, rc, d.command.location)
    d.ready.set()  # wakes a waiter; it checks the exit status


def _wait_ready(d: _Daemon, deadline: float, timeout: float) -> None:
    d.ready.wait(max(0.0, deadline - time.monotonic()))
    if d.proc.poll() is not None:
        d.proc.wait()
        time.sleep(0.05)  # let the pump take the last lines
        said = " | ".join(d.lines[-5:]) or "no output"
        raise LimaError(f"virtiofsd for {d.command.location} exited with status "
                        f"{d.proc.returncode}: {said}")
    if not d.ready.is_set():
        raise LimaError(f"virtiofsd for {d.command.location} did not get ready within "
                        f"{timeout:g} s")
