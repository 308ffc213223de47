"""The host agent: one daemon per running instance that owns its qemu (DESIGN.md section 6).

`limactl hostagent NAME` (lima.commands.hostagent) builds a `HostAgent` and runs it; the
controller's driver uses the client side: `start_hostagent`, `hostagent_info`,
`stop_hostagent`, `read_events`.

While it runs, the daemon keeps these facts in the instance directory:
- ha.pid: its PID (written atomically, removed at exit);
- ha.sock: HTTP over a unix socket, `GET /v1/info` -> `{"sshLocalPort": N}`;
- ha.stdout.log: one JSON event per line in Lima's shape, `{"time": RFC3339, "status":
  {"running", "degraded", "exiting", "errors", "sshLocalPort"}}`: booting first, then
  running (degraded with errors when provisioning failed) or an error, exiting last;
- ha.stderr.log: its own logs as JSON lines; qemu.stdout.log / qemu.stderr.log: qemu's.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from lima import paths
from lima.drivers import ports, procs, runner
from lima.drivers.heartbeat import Heartbeat
from lima.drivers.qemuproc import QemuProcess
from lima.errors import BusyError, LimaError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

QEMU_STDOUT = "qemu.stdout.log"
QEMU_STDERR = "qemu.stderr.log"
_POLL = 0.05  # main loop tick: signals are noticed within this time
# The error the host agent reports while the heartbeat gets no answer from the guest.
UNRESPONSIVE = "the guest does not answer"


# --- events -------------------------------------------------------------------------------

def make_event(
    *,
    ssh_port: int,
    running: bool = False,
    degraded: bool = False,
    exiting: bool = False,
    errors: Sequence[str] = (),
    phase: str | None = None,
) -> dict[str, Any]:
    """One event in Lima's shape (every field present, so readers need no defaults).

    `phase` (ours, ignored by Lima's readers) marks progress while booting: "ssh_ready",
    then "provisioned".
    """
    status: dict[str, Any] = {
        "running": running,
        "degraded": degraded,
        "exiting": exiting,
        "errors": list(errors),
        "sshLocalPort": ssh_port,
    }
    if phase is not None:
        status["phase"] = phase
    return {"time": datetime.now().astimezone().isoformat(), "status": status}


def append_event(inst_dir: Path, event: dict[str, Any]) -> None:
    """Append one JSON line to ha.stdout.log with a single O_APPEND write."""
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    fd = os.open(inst_dir / paths.HA_STDOUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(inst_dir: Path) -> list[dict[str, Any]]:
    """Every event in ha.stdout.log, oldest first; torn or foreign lines are skipped."""
    try:
        text = (inst_dir / paths.HA_STDOUT).read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and isinstance(event.get("status"), dict):
                events.append(event)
    return events


# --- /v1/info over ha.sock ------------------------------------------------------------------

class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    info: Callable[[], dict[str, Any]]


class _InfoHandler(http.server.BaseHTTPRequestHandler):
    server: _UnixHTTPServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/v1/info":
            self.send_error(404)
            return
        body = json.dumps(self.server.info()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "ha.sock"  # unix peers have no address; the default indexes an empty string

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: " + format, *args)


def serve_info(sock_path: Path, info: Callable[[], dict[str, Any]]) -> _UnixHTTPServer:
    """Serve `GET /v1/info` on `sock_path` from a background thread."""
    if len(str(sock_path).encode()) >= paths.UNIX_PATH_MAX:
        raise LimaError(f"socket path too long for a unix socket: {sock_path}")
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    server = _UnixHTTPServer(str(sock_path), _InfoHandler)
    server.info = info
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ha-api",
                     daemon=True).start()
    return server


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def hostagent_info(inst_dir: Path, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """`GET /v1/info` on ha.sock; None when no host agent answers."""
    sock = inst_dir / paths.HA_SOCK
    if not sock.exists():
        return None
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", "/v1/info")
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        data = json.loads(resp.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return data if isinstance(data, dict) else None


# --- the daemon -------------------------------------------------------------------------------

class Guest(Protocol):
    """What the daemon waits on once qemu runs; the real one is lima.drivers.ssh.SSHGuest."""

    def ready(self, stop: threading.Event, progress: Callable[[str], None]) -> list[str]:
        """Block until the guest is up; return errors that make it degraded.

        Call `progress(phase)` on the way ("ssh_ready", "provisioned"); give up when `stop`
        is set. Raise LimaError when it never came up (the daemon then shuts qemu down).
        """

    def close(self) -> None:
        """Release sessions (mounts, ssh) before qemu is stopped."""

    def alive(self, timeout: float) -> bool:
        """Whether the running guest answers within `timeout` seconds (the heartbeat)."""


# (inst_dir, timeout) -> whether qemu is gone; see lima.drivers.qmp.powerdown.
PowerDown = Callable[[Path, float], bool]


def qmp_powerdown(inst_dir: Path, timeout: float) -> bool:
    """ACPI power button through QMP, then wait for qemu (lima.drivers.qmp.powerdown)."""
    from lima.drivers import qmp  # only the stopping agent needs it

    return qmp.powerdown(inst_dir, timeout=timeout)


def write_pidfile(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.{pid}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


class HostAgent:
    """Runs one instance: qemu as a child, the API, the events, the guest readiness.

    `qemu_argv` is any command (tests use a dummy process); `guest` decides readiness;
    `powerdown` asks qemu to shut the guest down (QMP by default). `attach`: do not start
    qemu, take over the instance's running one (its previous host agent died); the guest
    is not rebooted, readiness is checked again from the guest's own facts.
    """

    def __init__(
        self,
        inst_dir: Path,
        *,
        ssh_port: int,
        qemu_argv: Sequence[str],
        guest: Guest,
        powerdown: PowerDown = qmp_powerdown,
        stop_timeout: float = 60.0,
        attach: bool = False,
        iid: str = "",
    ) -> None:
        self.inst_dir = inst_dir
        self.ssh_port = ssh_port
        self.qemu_argv = list(qemu_argv)
        self.guest = guest
        self.powerdown = powerdown
        self.stop_timeout = stop_timeout
        self._signal: int | None = None
        self._stop_guest = threading.Event()
        self._wake = threading.Event()
        self._ready: list[str] | LimaError | None = None
        self._qemu: QemuProcess | None = None
        self._server: _UnixHTTPServer | None = None
        self.attach = attach
        self.iid = iid
        # What /v1/info reports: the agent's own view, which outranks ha.stdout.log (a
        # file anyone can truncate); "responsive" comes from the heartbeat.
        self._state: dict[str, Any] = {"phase": "booting", "running": False,
                                       "degraded": False, "errors": [], "responsive": True}
        self._responsive: tuple[bool, float] | None = None  # a change not yet announced
        self._lock = threading.Lock()

    # The signal handler only records the signal; the main loop polls it, so no lock is
    # ever taken inside a handler.
    def request_stop(self, signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        self._signal = signum

    def run(self, *, install_signals: bool = True) -> int:
        """Run until qemu exits or a stop is requested; returns the exit code."""
        pid_path = self.inst_dir / paths.HA_PID
        other = procs.hostagent_pid(self.inst_dir)
        if other and other != os.getpid():
            raise BusyError(f"a host agent (pid {other}) already runs for {self.inst_dir}")
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        write_pidfile(pid_path, os.getpid())
        try:
            self._server = serve_info(self.inst_dir / paths.HA_SOCK, self.info)
            self._emit()
            log.info("host agent started: pid %d, ssh port %d", os.getpid(), self.ssh_port)
            return self._supervise()
        finally:
            self._cleanup(pid_path)

    def info(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self._state)
        qemu = self._qemu
        return {"sshLocalPort": self.ssh_port, "iid": self.iid, "attached": self.attach,
                "qemuPID": qemu.pid if qemu is not None else 0, **state}

    def _emit(self, **status: Any) -> None:
        with self._lock:
            if status.get("phase"):
                self._state["phase"] = status["phase"]
            if status.get("running"):
                self._state.update(phase="running", running=True)
            if "errors" in status or status.get("running"):
                self._state["errors"] = list(status.get("errors") or [])
                self._state["degraded"] = bool(status.get("degraded"))
            if status.get("exiting"):
                self._state.update(phase="exiting", running=False)
        append_event(self.inst_dir, make_event(ssh_port=self.ssh_port, **status))

    def _supervise(self) -> int:
        if self.attach:
            self._qemu = QemuProcess.attach(self.inst_dir)
            if self._qemu is None:
                msg = "no running qemu of this instance to attach to"
                log.error("%s", msg)
                self._emit(errors=[msg])
                self._emit(exiting=True)
                return 1
            log.info("attached to the running qemu (pid %d); the guest is not rebooted",
                     self._qemu.pid)
        else:
            try:
                self._qemu = QemuProcess.started(self._start_qemu(), self.inst_dir)
            except LimaError as exc:
                log.error("qemu did not start: %s", exc)
                self._emit(errors=[f"qemu did not start: {exc}"])
                self._emit(exiting=True)
                return 1
        threading.Thread(target=self._watch_qemu, name="qemu-wait", daemon=True).start()
        threading.Thread(target=self._wait_guest, name="guest-ready", daemon=True).start()
        announced = False
        rc = 0
        errors: list[str] = []
        while True:
            self._wake.wait(_POLL)
            self._wake.clear()
            if self._signal is not None:
                log.info("signal %d: shutting the guest down", self._signal)
                break
            if self._qemu.poll() is not None:
                msg = self._qemu_exit_message(self._qemu.returncode)
                log.error("%s", msg)
                self._emit(errors=[msg])
                rc = 1
                break
            ready = self._ready
            if ready is not None and not announced:
                announced = True
                if isinstance(ready, LimaError):
                    log.error("guest did not become ready: %s", ready)
                    self._emit(errors=[str(ready)])
                    rc = 1
                    break
                log.info("guest is running%s", f" (degraded: {ready})" if ready else "")
                errors = list(ready)
                self._emit(running=True, degraded=bool(ready), errors=ready)
                self._start_heartbeat()
            change, self._responsive = self._responsive, None
            if change is not None and announced:
                self._announce_responsive(*change, errors)
        self._stop_guest.set()
        with contextlib.suppress(Exception):
            self.guest.close()
        self._stop_qemu()
        self._emit(exiting=True)
        log.info("host agent exiting (%d)", rc)
        return rc

    def _start_heartbeat(self) -> None:
        probe = getattr(self.guest, "alive", None)
        if probe is None:
            return

        def changed(responsive: bool, since: float) -> None:
            self._responsive = (responsive, since)
            self._wake.set()

        beat = Heartbeat(probe, changed)
        threading.Thread(target=beat.run, args=(self._stop_guest,), name="heartbeat",
                         daemon=True).start()

    def _announce_responsive(self, responsive: bool, since: float, errors: list[str]) -> None:
        with self._lock:
            self._state["responsive"] = responsive
        if responsive:
            self._emit(running=True, degraded=bool(errors), errors=errors)
            return
        when = datetime.fromtimestamp(since).astimezone().isoformat(timespec="seconds")
        self._emit(running=True, degraded=True,
                   errors=[*errors, f"{UNRESPONSIVE}: no answer over ssh since {when}"])

    def _start_qemu(self) -> subprocess.Popen[bytes]:
        out = open(self.inst_dir / QEMU_STDOUT, "wb")  # noqa: SIM115 (the child keeps it)
        err = open(self.inst_dir / QEMU_STDERR, "wb")  # noqa: SIM115
        try:
            return runner.spawn(self.qemu_argv, stdout=out, stderr=err, cwd=self.inst_dir)
        finally:
            out.close()
            err.close()

    def _progress(self, phase: str) -> None:
        if self._signal is None:
            self._emit(phase=phase)

    def _watch_qemu(self) -> None:
        assert self._qemu is not None
        self._qemu.wait()
        self._wake.set()

    def _wait_guest(self) -> None:
        try:
            self._ready = self.guest.ready(self._stop_guest, self._progress)
        except LimaError as exc:
            self._ready = exc
        except Exception as exc:  # a bug in readiness must not leave the agent hanging
            log.exception("readiness failed")
            self._ready = LimaError(f"readiness failed: {type(exc).__name__}: {exc}")
        self._wake.set()

    def _qemu_exit_message(self, rc: int | None) -> str:
        if self._qemu is not None and self._qemu.attached:
            return "qemu (attached) exited"
        try:
            lines = (self.inst_dir / QEMU_STDERR).read_text(errors="replace").strip()
        except OSError:
            lines = ""
        tail = " | ".join(lines.splitlines()[-5:])
        return f"qemu exited with status {rc}" + (f": {tail}" if tail else "")

    def _stop_qemu(self) -> None:
        proc = self._qemu
        if proc is None:
            return
        if proc.poll() is None:
            deadline = time.monotonic() + self.stop_timeout
            try:
                if self.powerdown(self.inst_dir, self.stop_timeout) and proc.poll() is None:
                    # QMP saw no qemu of this instance (e.g. no qemu.pid): ours is not it.
                    deadline = min(deadline, time.monotonic() + 1.0)
            except (LimaError, OSError, ImportError) as exc:
                log.warning("QMP powerdown failed (%s); killing qemu", exc)
                deadline = time.monotonic()
            if not proc.wait(timeout=max(0.0, deadline - time.monotonic())):
                log.warning("qemu still runs after powerdown; killing it")
                proc.kill()
        log.info("qemu exited with status %s", proc.returncode)
        qemu_pid_path = self.inst_dir / paths.QEMU_PID
        if procs.read_pid(qemu_pid_path) == proc.pid:
            with contextlib.suppress(FileNotFoundError):
                qemu_pid_path.unlink()

    def _cleanup(self, pid_path: Path) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                (self.inst_dir / paths.HA_SOCK).unlink()
        if procs.read_pid(pid_path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                pid_path.unlink()


# --- client side (the controller's driver) ---------------------------------------------------

# Host agents this process started: kept so they can be reaped (no zombies in a long-lived
# controller, and a zombie would look alive to a pid check).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


pick_ssh_port = ports.pick_ssh_port  # moved to lima.drivers.ports; callers still import it here


def tail_lines(path: Path, n: int = 10) -> str:
    """The last `n` lines of a log file ("" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


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
) -> int:
    """Start `limactl hostagent NAME` in its own session; return its PID once ha.sock answers.

    ha.stdout.log and ha.stderr.log start empty, as in Lima. `qemu_argv` overrides the
    command built from the spec (tests use a dummy). `attach`: the new agent takes over
    the instance's running qemu (see HostAgent). Raises TemporaryError when the agent
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
    if attach:
        argv.append("--attach")
    elif qemu_argv is not None:
        argv_file = inst_dir / "ha.qemu-argv.json"
        argv_file.write_text(json.dumps(list(qemu_argv)))
        argv += ["--qemu-argv-json", str(argv_file)]
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
