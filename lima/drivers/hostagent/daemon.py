"""The host agent daemon: one per running instance, owning (or attached to) its qemu.

`limactl hostagent NAME` (lima.commands.hostagent) builds a `HostAgent` and runs it. It
writes ha.pid, serves /v1/info (lima.drivers.hostagent.api), appends events to
ha.stdout.log (lima.drivers.hostagent.events), waits for the guest's readiness, checks
the running guest with a heartbeat, runs the port forwarder (lima.drivers.hostagent.portfwd)
and on SIGTERM powers the guest down through QMP. With `mountType: virtiofs` it starts one
virtiofsd per mount before qemu and ends them once qemu is gone (hostagent/virtiofsd.py).
On SIGUSR1 it suspends: the guest unmounts what QEMU cannot migrate (9p: the guest's
prepare_suspend), the guest's state is saved to suspend.state (lima.drivers.suspend),
then qemu quits and the agent exits; with `resume` it loads that state into the qemu it
starts (with `-incoming defer`) instead of booting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lima import paths
from lima.drivers import procs, runner
from lima.drivers.hostagent import templateboot
from lima.drivers.hostagent.api import UnixHTTPServer, serve_info
from lima.drivers.hostagent.events import QEMU_STDERR, QEMU_STDOUT, append_event, make_event
from lima.drivers.hostagent.heartbeat import Heartbeat
from lima.drivers.hostagent.qemuproc import QemuProcess
from lima.errors import BusyError, LimaError
from lima.fsutil import atomic_write

if TYPE_CHECKING:
    from lima.drivers.hostagent.dns import DNSServer, ResolverConfig
    from lima.drivers.hostagent.virtiofsd import VirtiofsDaemons
    from lima.drivers.virtiofs import DaemonCommand

_POLL = 0.05  # main loop tick: signals are noticed within this time
# The error the host agent reports while the heartbeat gets no answer from the guest.
UNRESPONSIVE = "the guest does not answer"

log = logging.getLogger(__name__)

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


class Forwards(Protocol):
    """The port forwarder (lima.drivers.hostagent.portfwd.Forwarder)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def reload(self) -> None: ...  # lima.yaml's portForwards changed (SIGHUP)
    def open_connections(self) -> int: ...  # forwarded connections open now
    def guest_running(self) -> None: ...  # readiness is done: log in ahead now


class Display(Protocol):
    """The guest's VNC display (lima.drivers.display), set up once qemu runs."""

    def start(self) -> None: ...  # LimaError: it cannot be served (the agent then exits)
    def stop(self) -> None: ...  # qemu is gone: forget the display


# Builds the forwarder once qemu runs, given where its portForward events go.
ForwardsFactory = Callable[[Callable[[dict[str, Any]], None]], Forwards]

# (inst_dir, timeout) -> whether qemu is gone; see lima.drivers.qmp.powerdown.
PowerDown = Callable[[Path, float], bool]


def qmp_powerdown(inst_dir: Path, timeout: float) -> bool:
    """ACPI power button through QMP, then wait for qemu (lima.drivers.qmp.powerdown)."""
    from lima.drivers import qmp  # only the stopping agent needs it

    return qmp.powerdown(inst_dir, timeout=timeout)


def write_pidfile(path: Path, pid: int) -> None:
    # Readers (lima.drivers.procs) must never see an empty or half-written pid file.
    atomic_write(path, f"{pid}\n")


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
        dns: ResolverConfig | None = None,
        forwards: ForwardsFactory | None = None,
        display: Display | None = None,
        virtiofsd: Sequence[DaemonCommand] = (),
        resume: bool = False,
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
        self._server: UnixHTTPServer | None = None
        self.attach = attach
        self.iid = iid
        self.dns = dns  # hostResolver: served on dns.sock while the agent runs
        self._dns_server: DNSServer | None = None
        self.forwards = forwards
        self._forwarder: Forwards | None = None
        self._ssh_ready = threading.Event()  # readiness logged in (guest.ready's progress)
        self.display = display
        self._reload = False  # set by SIGHUP: re-read the port forwards
        self.virtiofsd = list(virtiofsd)  # started before qemu, ended after it
        self._virtiofsd: VirtiofsDaemons | None = None
        # What /v1/info reports: the agent's own view, which outranks ha.stdout.log (a
        # file anyone can truncate); "responsive" comes from the heartbeat.
        self.resume = resume  # qemu_argv has `-incoming defer`: load suspend.state into it
        self._suspend_asked = False  # set by SIGUSR1
        self._suspended = False  # the state is saved: qemu quits, no guest shutdown
        self._state: dict[str, Any] = {"phase": "resuming" if resume else "booting",
                                       "running": False,
                                       "degraded": False, "errors": [], "responsive": True}
        self._responsive: tuple[bool, float] | None = None  # a change not yet announced
        self._lock = threading.Lock()
        # /v1/info's `version`: one more at each event, so a long poll sees every change.
        self._version = 0
        self._changed = threading.Condition(self._lock)

    # The signal handler only records the signal; the main loop polls it, so no lock is
    # ever taken inside a handler.
    def request_stop(self, signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        self._signal = signum

    def request_reload(self, _signum: int = signal.SIGHUP, _frame: Any = None) -> None:
        self._reload = True
        self._wake.set()

    def request_suspend(self, _signum: int = signal.SIGUSR1, _frame: Any = None) -> None:
        self._suspend_asked = True
        self._wake.set()

    def run(self, *, install_signals: bool = True) -> int:
        """Run until qemu exits or a stop is requested; returns the exit code."""
        pid_path = self.inst_dir / paths.HA_PID
        other = procs.hostagent_pid(self.inst_dir)
        if other and other != os.getpid():
            raise BusyError(f"a host agent (pid {other}) already runs for {self.inst_dir}")
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            # SIGHUP: lima.yaml changed live (`limactl apply`: a new portForwards); the
            # agent runs in its own session, so no terminal hang-up sends it.
            signal.signal(signal.SIGHUP, self.request_reload)
            signal.signal(signal.SIGUSR1, self.request_suspend)  # `limactl suspend`
        write_pidfile(pid_path, os.getpid())
        try:
            self._server = serve_info(self.inst_dir / paths.HA_SOCK, self.info,
                                      self.wait_change)
            self._start_dns()
            self._emit()
            log.info("host agent started: pid %d, ssh port %d", os.getpid(), self.ssh_port)
            return self._supervise()
        finally:
            self._cleanup(pid_path)

    def info(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self._state)
            version = self._version
        qemu = self._qemu
        forwarder = self._forwarder
        return {"sshLocalPort": self.ssh_port, "iid": self.iid, "attached": self.attach,
                "qemuPID": qemu.pid if qemu is not None else 0,
                "openConnections": forwarder.open_connections() if forwarder else 0,
                "version": version, **state}

    def wait_change(self, after: int, timeout: float) -> None:
        """Return once the view is not at version `after` any more (an event was written,
        or `after` came from another agent's run), or after `timeout`."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != after, timeout)

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
        try:
            append_event(self.inst_dir, make_event(ssh_port=self.ssh_port, **status))
        finally:
            with self._changed:  # after the log line: a waiter may read either
                self._version += 1
                self._changed.notify_all()

    def _emit_port_forward(self, port_forward: dict[str, Any]) -> None:
        """A `portForward` event on top of the current status, as Lima writes it."""
        with self._lock:
            state = dict(self._state)
        event = make_event(ssh_port=self.ssh_port, running=state["running"],
                           degraded=state["degraded"], errors=state["errors"])
        event["status"]["portForward"] = port_forward
        append_event(self.inst_dir, event)

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
            if error := templateboot.settle_attached(self.inst_dir, self._qemu):
                self._emit(errors=[error])
                self._emit(exiting=True)
                return 1
            from lima.drivers.hostagent.virtiofsd import VirtiofsDaemons

            self._virtiofsd = VirtiofsDaemons.adopt(self.inst_dir)
        else:
            try:
                self._start_virtiofsd()
            except LimaError as exc:
                log.error("%s", exc)
                self._emit(errors=[str(exc)])
                self._emit(exiting=True)
                return 1
            warm = getattr(self.guest, "warm", None)
            if self.resume and warm is not None:
                # Readiness's imports load while the state does: it logs in at `cont`.
                threading.Thread(target=warm, name="guest-warm", daemon=True).start()
            try:
                self._qemu = QemuProcess.started(
                    templateboot.boot(self.inst_dir, self.qemu_argv, self._start_qemu,
                                      resume=self.resume), self.inst_dir)
                log.info("qemu started (pid %d)", self._qemu.pid)
            except LimaError as exc:
                log.error("qemu did not start: %s", exc)
                self._stop_virtiofsd()
                self._emit(errors=[f"qemu did not start: {exc}"])
                self._emit(exiting=True)
                return 1
            if self.resume and not self._load_state():
                self._stop_virtiofsd()
                self._emit(exiting=True)
                return 1
        threading.Thread(target=self._watch_qemu, name="qemu-wait", daemon=True).start()
        rc = 0
        if self.display is not None:
            try:
                self.display.start()
            except LimaError as exc:  # Lima's host agent gives up, too
                msg = f"VNC display not set up: {exc}"
                log.error("%s", msg)
                self._emit(errors=[msg])
                rc = 1
        if rc == 0:
            rc = self._run_guest()
        self._stop_guest.set()
        if self._forwarder is not None:
            with contextlib.suppress(Exception):
                self._forwarder.stop()
        with contextlib.suppress(Exception):
            self.guest.close()
        self._stop_qemu()
        self._stop_virtiofsd()
        if self.display is not None:
            with contextlib.suppress(Exception):
                self.display.stop()
        self._emit(exiting=True)
        log.info("host agent exiting (%d)", rc)
        return rc

    def _run_guest(self) -> int:
        """Forwards, readiness and the heartbeat, until qemu exits or a stop is asked."""
        assert self._qemu is not None
        # The forwarder's own ssh login costs the guest about a second of CPU under TCG:
        # alongside readiness's it delayed ssh_ready by as much, and while cloud-init's
        # last stages and boot.sh ran, Running. A booting guest's forwarder starts once
        # readiness has logged in (ssh_ready: it reads the guest agent's reports and
        # forwards through QEMU), and logs in ahead once the guest is Running
        # (guest_running; a forward over ssh asked for before logs in then). A resumed
        # guest's sshd answers at once, and its first logins and commands cost it CPU
        # seconds (its translated code was not saved): its forwarder starts once
        # readiness is done (clock, mounts).
        forwards_due = False
        threading.Thread(target=self._wait_guest, name="guest-ready", daemon=True).start()
        if self.resume:
            from lima.drivers import suspend

            suspend.remove_temp(self.inst_dir)  # the state just loaded, moved aside
        announced = False
        rc = 0
        errors: list[str] = []
        while True:
            self._wake.wait(_POLL)
            self._wake.clear()
            if self._signal is not None:
                log.info("signal %d: shutting the guest down", self._signal)
                break
            if self._suspend_asked:
                self._suspend_asked = False
                if self._save_state():
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
                if self._forwarder is not None:
                    self._forwarder.guest_running()
            if not forwards_due and (ready is not None
                                     or (self._ssh_ready.is_set() and not self.resume)):
                forwards_due = True
                self._start_forwards()
                if announced and self._forwarder is not None:
                    self._forwarder.guest_running()
            if self._reload:
                self._reload = False
                if self._forwarder is not None:
                    try:
                        self._forwarder.reload()
                    except Exception:  # a bad reload keeps the guest and the old forwards
                        log.exception("the port forwards could not be reloaded")
            change, self._responsive = self._responsive, None
            if change is not None and announced:
                self._announce_responsive(*change, errors)
        return rc

    def _start_forwards(self) -> None:
        if self.forwards is None:
            return
        try:
            self._forwarder = self.forwards(self._emit_port_forward)
            self._forwarder.start()
        except Exception:  # forwards are not worth the guest: run without them
            log.exception("the port forwarder did not start")

    def _save_state(self) -> bool:
        """Suspend: unmount what QEMU cannot migrate (the guest's prepare_suspend), then save
        the guest's state (lima.drivers.suspend). True when saved (qemu is then quit); on a
        failure the guest is continued, its mounts mounted again, and the error reported."""
        from lima.drivers import qmp, suspend
        from lima.drivers.applied import read_applied

        assert self._qemu is not None
        with self._lock:
            was = dict(self._state)
        self._emit(phase="suspending")
        argv = suspend.without_incoming(procs.cmdline(self._qemu.pid) or self.qemu_argv)
        applied = read_applied(self.inst_dir)
        started = time.monotonic()
        prepared = False
        try:
            getattr(self.guest, "prepare_suspend", lambda: None)()
            prepared = True
            suspend.save_state(self.inst_dir, argv, generation=applied.generation if applied
                               else "", iid=self.iid, ssh_port=self.ssh_port,
                               boot_done=getattr(self.guest, "boot_done", lambda: False)())
        except (LimaError, OSError) as exc:
            log.error("suspend failed: %s; the guest goes on running", exc)
            errors = [*was["errors"], f"suspend failed: {exc}"]
            if prepared:
                with contextlib.suppress(LimaError, OSError), qmp.QMPClient(
                        self.inst_dir / paths.QMP_SOCK) as client:
                    client.execute("cont")
                errors += getattr(self.guest, "suspend_failed", list)()
            with self._lock:
                self._state["phase"] = was["phase"]
            self._emit(running=bool(was["running"]), degraded=True, errors=errors)
            return False
        log.info("the guest's state is saved in %s (%.1f s); quitting qemu",
                 paths.SUSPEND_STATE, time.monotonic() - started)
        self._suspended = True
        return True

    def _load_state(self) -> bool:
        """Resume: load suspend.state into the qemu just started. False (the error
        reported, qemu gone) when it cannot; a state qemu refused is removed."""
        from lima.drivers import suspend

        assert self._qemu is not None
        started = time.monotonic()
        try:
            suspend.load_state(self.inst_dir)
        except (LimaError, OSError) as exc:
            # QEMU exits when it cannot load the state: it refused it (give it a moment to).
            refused = self._qemu.wait(timeout=2.0)
            if not refused:
                self._qemu.kill()
            msg = f"the saved state could not be loaded: {exc}"
            if refused:
                suspend.discard(self.inst_dir)
                msg += f" ({self._qemu_exit_message(self._qemu.returncode)}); it was removed:" \
                       " the next start boots afresh"
            log.error("%s", msg)
            self._emit(errors=[msg])
            return False
        log.info("resumed from %s in %.1f s", paths.SUSPEND_STATE, time.monotonic() - started)
        return True

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

    def _start_qemu(self, argv: list[str]) -> runner.Popen[bytes]:
        out = open(self.inst_dir / QEMU_STDOUT, "wb")  # noqa: SIM115 (the child keeps it)
        err = open(self.inst_dir / QEMU_STDERR, "wb")  # noqa: SIM115
        try:
            return runner.spawn(argv, stdout=out, stderr=err, cwd=self.inst_dir)
        finally:
            out.close()
            err.close()

    def _start_virtiofsd(self) -> None:
        if not self.virtiofsd:
            return
        from lima.drivers.hostagent.virtiofsd import VirtiofsDaemons

        self._virtiofsd = VirtiofsDaemons.start(self.virtiofsd)

    def _stop_virtiofsd(self) -> None:
        if self._virtiofsd is not None:
            self._virtiofsd.stop()

    def _progress(self, phase: str) -> None:
        if self._signal is None:
            self._emit(phase=phase)
        if phase == "ssh_ready":
            self._ssh_ready.set()
            self._wake.set()

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
        if proc.poll() is None and self._suspended:
            from lima.drivers import qmp

            with contextlib.suppress(LimaError, OSError):
                qmp.quit(self.inst_dir, timeout=10.0)
            if not proc.wait(timeout=5.0):
                proc.kill()
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

    def _start_dns(self) -> None:
        if self.dns is None:
            return
        from lima.drivers.hostagent.dns import start_server

        try:
            self._dns_server = start_server(self.inst_dir, self.dns)
        except OSError as exc:  # the guest then resolves nothing; it still boots
            log.error("cannot start the DNS server (hostResolver): %s", exc)

    def _cleanup(self, pid_path: Path) -> None:
        if self._qemu is None or self._qemu.poll() is not None:
            self._stop_virtiofsd()  # an error on the way out: none outlives qemu
        if self._dns_server is not None:
            self._dns_server.stop()
        if procs.qemu_pid(self.inst_dir) is None:
            # The guest is gone (stopped, or powered off from inside): free its disks.
            from lima.drivers.disks import unlock_instance_disks

            with contextlib.suppress(OSError):
                unlock_instance_disks(self.inst_dir)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                (self.inst_dir / paths.HA_SOCK).unlink()
        if procs.read_pid(pid_path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                pid_path.unlink()

