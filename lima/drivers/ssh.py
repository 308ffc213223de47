"""SSH to a guest with paramiko: readiness, login, commands and marker files.

Called by the host agent (lima.drivers.hostagent) to decide when a guest is up, and by
the controller's driver for scripts. `limactl shell` runs the system `ssh` (so terminals
behave) and uses only lima.drivers.sshprobe's `wait_banner`, to tell a guest that does
not answer from other ssh failures. Readiness waits for sshd's banner there
(`banner_socket`), and the first login uses the connection that showed it: sshd forked
(and, without `sshd -r` in the guest, exec'd) for it. boot.sh's markers are read with
lima.drivers.markers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import tenacity

from lima.drivers.guest import BOOT_DONE_MARKER, SSH_READY_MARKER
from lima.drivers.markers import (
    BOOT_WAIT_BATCH,
    MarkerLooker,
    boot_wait_command,
    marker_command,
    parse_boot_wait,
    parse_resumed_check,
    resumed_clock_command,
)
from lima.drivers.sshprobe import HOST, banner_socket
from lima.errors import TemporaryError

if TYPE_CHECKING:
    from lima.drivers.serialwatch import ConsoleTail

log = logging.getLogger(__name__)

# A login that timed out is tried again with twice the time, up to this (seconds): under
# a heavily loaded host a TCG guest's key exchange and PAM session can take longer than
# the first attempt's 10 s.
MAX_ATTEMPT_TIMEOUT = 60.0

# How long `run` waits, after a command's exit status, for the rest of its output (the
# channel's EOF) when a background child of the command still holds its stdout open.
EOF_GRACE = 5.0


def connect(port: int, user: str, key_path: Path, *, timeout: float,
            sock: socket.socket | None = None) -> paramiko.SSHClient:
    """Log in as `user` with the instance key, over `sock` when given (a connection to the
    port, banner unread: `banner_socket`); failures are TemporaryError."""
    client = paramiko.SSHClient()
    # Guest host keys are new at every create; like Lima (StrictHostKeyChecking=no), accept.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            HOST,
            port=port,
            username=user,
            key_filename=str(key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            sock=sock,
        )
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        if sock is not None:
            sock.close()
        raise TemporaryError(f"ssh login to {user}@127.0.0.1:{port} failed: {exc}") from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


# A guest clock further than this off the host's is set again by the heartbeat (seconds;
# `date +%s` reads whole seconds, and a TCG guest's answer takes a while).
MAX_CLOCK_SKEW = 3.0


def clock_skew(guest_out: str, host_now: float) -> float | None:
    """The guest's clock minus the host's, from the guest's `date -u +%s` output (None
    when it is not a number)."""
    try:
        return int(guest_out.strip()) + 0.5 - host_now
    except ValueError:
        return None


def run(
    client: paramiko.SSHClient,
    command: str,
    *,
    timeout: float,
    input: bytes | str | None = None,
) -> tuple[int, str, str]:
    """Run `command` in the guest: (exit status, stdout, stderr). A timeout is TemporaryError."""
    rc, out, err = run_bytes(client, command, timeout=timeout, input=input)
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def run_bytes(
    client: paramiko.SSHClient,
    command: str,
    *,
    timeout: float,
    input: bytes | str | None = None,
) -> tuple[int, bytes, bytes]:
    """`run`, with stdout and stderr as the bytes the guest wrote (a file's content)."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise TemporaryError("ssh connection is closed")
    deadline = time.monotonic() + timeout
    try:
        chan = transport.open_session(timeout=timeout)
        chan.settimeout(timeout)
        chan.exec_command(command)
        if input is not None:
            chan.sendall(input.encode() if isinstance(input, str) else input)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        exited: float | None = None  # when the exit status came
        while True:
            idle = True
            if chan.recv_ready():
                out += chan.recv(65536)
                idle = False
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                idle = False
            if idle and chan.exit_status_ready() and not chan.recv_ready() \
                    and not chan.recv_stderr_ready():
                # OpenSSH sends the exit status when the command ends, which can be
                # before it has sent the last of its output: the end of the output is
                # the channel's EOF. A command whose background child keeps its stdout
                # open never gets one; its output so far is taken after EOF_GRACE.
                now = time.monotonic()
                exited = now if exited is None else exited
                if chan.eof_received or chan.closed or now - exited >= EOF_GRACE:
                    break
            if time.monotonic() > deadline:
                chan.close()
                raise TemporaryError(f"ssh command timed out after {timeout:g} s: {command}")
            if idle:
                # paramiko only signals stdout on its pipe; a short poll covers stderr too.
                if exited is None:
                    chan.status_event.wait(0.02)
                else:
                    time.sleep(0.01)
        rc = chan.recv_exit_status()
        chan.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TemporaryError(f"ssh command failed: {command}: {exc}") from exc
    return rc, bytes(out), bytes(err)


def read_marker(client: paramiko.SSHClient, path: str) -> str | None:
    """The stripped content of a guest file, or None when it does not exist (yet)."""
    rc, out, _ = run(client, marker_command(path), timeout=15)
    return out.strip() if rc == 0 else None


def _deadline_stop(deadline: float) -> Callable[[tenacity.RetryCallState], bool]:
    def stop(_: tenacity.RetryCallState) -> bool:
        return time.monotonic() >= deadline

    return stop


def wait_ssh(
    port: int, user: str, key_path: Path, *, deadline: float, attempt_timeout: float = 10.0,
    banner: bool = True,
) -> paramiko.SSHClient:
    """Wait for sshd (banner), then log in, retrying with backoff until `deadline`.

    Logins fail for a while after the banner (cloud-init installs the key, restarts sshd
    after generating host keys): those are retried too. Raises TemporaryError at the end.
    `banner=False` logs in at once: sshd is known to listen (a resumed guest), and every
    banner probe would cost its CPU an sshd fork and exec.
    """

    probe = banner
    timeout = attempt_timeout

    def attempt() -> paramiko.SSHClient:
        nonlocal probe, timeout
        sock = None
        if probe:
            # The login goes over the connection that showed the banner.
            sock = banner_socket(port, deadline=deadline)
            # sshd listens: later attempts log in straight away. Probing again before each
            # one costs a CPU-starved guest an sshd fork and exec per probe, enough to keep
            # it from ever finishing a login.
            probe = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if sock is not None:
                sock.close()
            raise TemporaryError(f"ssh on 127.0.0.1:{port}: deadline passed")
        started = time.monotonic()
        try:
            return connect(port, user, key_path, timeout=min(timeout, remaining), sock=sock)
        except TemporaryError:
            if time.monotonic() - started >= 0.9 * timeout:
                # Timed out rather than refused: this guest is slow, give it longer.
                timeout = min(2 * timeout, MAX_ATTEMPT_TIMEOUT)
            raise

    retrying = tenacity.Retrying(
        stop=_deadline_stop(deadline),
        # Once sshd answers, a refused login (key not installed yet) clears within a second:
        # retry soon rather than backing off for seconds.
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=0.5),
        retry=tenacity.retry_if_exception_type(TemporaryError),
        before_sleep=lambda state: log.debug(
            "ssh not ready (attempt %d): %s",
            state.attempt_number,
            state.outcome.exception() if state.outcome else "",
        ),
        reraise=True,
    )
    result: paramiko.SSHClient = retrying(attempt)
    return result


# --- boot readiness: the markers boot.sh writes ------------------------------------------

_MARKER_POLL = 0.2
# With the console read (a cold boot's serial.log: lima.drivers.serialwatch.ConsoleTail),
# readiness looks again when boot.sh has logged a line since its last look, or after these
# many seconds at the latest (a console that shows nothing): before ssh-ready, and while
# boot.sh runs its scripts. A look is a line to MarkerLooker's shell.
CONSOLE_FALLBACK_READY = 1.0
CONSOLE_FALLBACK_BOOT = 2.0

AfterBoot = Callable[[paramiko.SSHClient], list[str]]


class SSHGuest:
    """The host agent's view of a booting guest, over ssh (lima.drivers.hostagent.Guest).

    ready(): login, then `/run/lima-ssh-ready` == IID (else TemporaryError: the guest
    never came up), then `/run/lima-boot-done` == IID or `/run/lima-boot-failed` (errors
    that make the instance degraded), then `after_boot` (mounts) adds its own errors.
    A dropped connection (sshd restarted by cloud-init) is re-established until `timeout`.
    Each look reads the three markers through one shell kept in the guest
    (lima.drivers.markers.MarkerLooker); on a cold boot with a serial log the next look
    waits for boot.sh's next console line (ConsoleTail). `boot_failed` is
    what readiness found: True or False once boot.sh's outcome was read, else None.
    """

    def __init__(
        self,
        port: int,
        user: str,
        key_path: Path,
        iid: str,
        *,
        timeout: float,
        after_boot: AfterBoot | None = None,
        resumed: bool = False,
        serial_log: Path | None = None,
        boot_done: bool = False,
    ) -> None:
        self.resumed = resumed  # the guest was loaded from a saved state: no boot happened
        # Resumed: the saved state's boot.sh had written boot-done with `iid` (suspend.json).
        self.known_done = resumed and boot_done
        self.serial_log = serial_log  # read for cloud-init's "network is up" (serialwatch)
        self.port = port
        self.user = user
        self.key_path = key_path
        self.iid = iid
        self.timeout = timeout
        self.after_boot = after_boot
        self.client: paramiko.SSHClient | None = None
        self._beat: paramiko.SSHClient | None = None  # the heartbeat's own connection
        self._markers: dict[str, str] = {}  # what the last markers_command read
        self._looker: MarkerLooker | None = None  # on `client`
        self._console: ConsoleTail | None = None  # a cold boot's console, while ready() runs
        self.boot_failed: bool | None = None
        self._clock: threading.Thread | None = None  # a resumed guest's clock being set
        self._clock_set = False  # the guest answered resumed_clock_command

    def ready(
        self, stop: threading.Event, progress: Callable[[str], None] = lambda _: None
    ) -> list[str]:
        deadline = time.monotonic() + self.timeout
        check = self._ssh_ready
        if self.resumed:
            check = self._resumed_ready
        watched = threading.Event()  # set: the serial watcher ends
        if self.serial_log is not None and not self.resumed:
            from lima.drivers.serialwatch import ConsoleTail, watch_network_up

            watch_network_up(self.serial_log, self.port, watched)
            self._console = ConsoleTail(self.serial_log).start()
        try:
            return self._ready(stop, deadline, check, progress)
        finally:
            watched.set()
            if self._console is not None:
                self._console.stop()
                self._console = None
            self._close_looker()

    def _ready(
        self, stop: threading.Event, deadline: float,
        check: Callable[[paramiko.SSHClient], str | None], progress: Callable[[str], None],
    ) -> list[str]:
        from lima.drivers.serialwatch import FINISHED_LINE, LIMA_LINE

        found = self._poll(stop, deadline, check, LIMA_LINE, CONSOLE_FALLBACK_READY)
        if found is None:
            raise TemporaryError(
                f"the guest did not become ready within {self.timeout:g} s: no ssh login "
                f"with {SSH_READY_MARKER} holding this boot's IID"
            )
        log.info("ssh is ready on port %d", self.port)
        progress("ssh_ready")
        errors: list[str] = []
        outcome = self._poll(stop, deadline, self._boot_outcome, FINISHED_LINE,
                             CONSOLE_FALLBACK_BOOT)
        if outcome is not None:
            self.boot_failed = bool(outcome)
        if outcome is None:
            errors.append(f"provisioning did not finish within {self.timeout:g} s "
                          f"({BOOT_DONE_MARKER} not written)")
        elif outcome:
            errors.append(outcome)
        else:
            log.info("boot scripts and provisioning done")
            progress("provisioned")
        if self.resumed:
            self._await_clock(deadline)
        if self.after_boot is not None and self.client is not None:
            errors += self.after_boot(self.client)
        return errors

    def _close_looker(self) -> None:
        if self._looker is not None:
            self._looker.close()
            self._looker = None

    def close(self) -> None:
        self._close_looker()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._beat is not None:
            self._beat.close()
            self._beat = None

    def alive(self, timeout: float) -> bool:
        """One heartbeat: log in (on a connection of its own, so a hung check never touches
        the sessions the mounts run on) and read the guest's clock, all within `timeout`
        seconds. A clock that is off by more than MAX_CLOCK_SKEW (the guest was paused, or
        the host suspended) is set to the host's time at once."""
        deadline = time.monotonic() + timeout
        try:
            if self._beat is None:
                self._beat = wait_ssh(self.port, self.user, self.key_path, deadline=deadline,
                                      attempt_timeout=timeout)
            sent = time.time()
            rc, out, _ = run(self._beat, "date -u +%s",
                             timeout=max(0.5, deadline - time.monotonic()))
            if rc == 0:
                host_now = (sent + time.time()) / 2
                self._sync_clock(out, host_now, deadline)
        except TemporaryError as exc:
            log.debug("heartbeat: %s", exc)
            if self._beat is not None:
                self._beat.close()
                self._beat = None
            return False
        return rc == 0

    def _sync_clock(self, guest_out: str, host_now: float, deadline: float,
                    max_skew: float = MAX_CLOCK_SKEW,
                    client: paramiko.SSHClient | None = None) -> None:
        """Set the guest's clock to the host's when `guest_out` (its `date -u +%s`) is off
        by more than MAX_CLOCK_SKEW. Best effort: a guest that refuses is logged, not
        counted as unresponsive."""
        skew = clock_skew(guest_out, host_now)
        client = client or self._beat
        if skew is None or abs(skew) <= max_skew or client is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 0.5))
        set_cmd = f"date -u -s '{stamp}' >/dev/null"
        if self.user != "root":
            set_cmd = f"sudo -n {set_cmd}"
        rc, _, err = run(client, set_cmd, timeout=max(0.5, deadline - time.monotonic()))
        if rc == 0:
            log.info("the guest clock was %+.0f s off the host's (a pause or a host suspend);"
                     " set it to the host's time", skew)
        else:
            log.warning("the guest clock is %+.0f s off the host's and could not be set: %s",
                        skew, err.strip() or f"exit {rc}")

    def _resumed_ready(self, client: paramiko.SSHClient) -> str | None:
        """A resumed guest: its markers are read in one command of shell builtins, while
        its clock (as old as the saved state) is set on a channel of its own (_set_clock,
        awaited before after_boot: the mounts' sudo then finds its code translated). A boot
        that is done needs no second look (_boot_outcome), and a saved state whose boot was
        done (`known_done`) none at all."""
        if self._clock is None or (not self._clock.is_alive() and not self._clock_set):
            self._clock = threading.Thread(target=self._set_clock, args=(client,),
                                           name="resumed-clock", daemon=True)
            self._clock.start()
        if self.known_done:
            # The markers are those of the saved state, read before it was saved: the login
            # is what there was to prove.
            self._markers = {"ssh-ready": self.iid, "boot-done": self.iid}
            return ""
        return self._ssh_ready(client)

    def _set_clock(self, client: paramiko.SSHClient) -> None:
        """Set a resumed guest's clock when it is off by more than RESUMED_MAX_SKEW."""
        sent = time.time()
        try:
            rc, out, _ = run(client, resumed_clock_command(sent, self.user), timeout=20.0)
        except TemporaryError as exc:
            log.debug("the resumed guest's clock: %s", exc)
            return  # the login is lost: readiness logs in again and starts this again
        self._clock_set = True
        found = parse_resumed_check(out)
        skew = clock_skew(found.get("clock", ""), (sent + time.time()) / 2)
        if "clock-set" in found:
            log.info("the guest clock was %+.0f s off the host's (resumed); set it to the "
                     "host's time", skew or 0.0)
        elif "clock-failed" in found:
            log.warning("the guest clock is %+.0f s off the host's and could not be set: %s",
                        skew or 0.0, found["clock-failed"] or f"exit {rc}")

    def _await_clock(self, deadline: float) -> None:
        """ready() of a resumed guest ends with its clock set (or its setting given up)."""
        clock = self._clock
        if clock is not None:
            clock.join(max(0.0, deadline - time.monotonic()))
            if clock.is_alive():
                log.warning("the resumed guest's clock was not set in time")
                return
        if not self._clock_set and self.client is not None and time.monotonic() < deadline:
            self._set_clock(self.client)  # its first login was lost: once more

    def _led(self) -> ConsoleTail | None:
        """The console readiness follows: a cold boot's serial.log, once it exists."""
        console = self._console
        return console if console is not None and console.present else None

    def _look(self, client: paramiko.SSHClient) -> dict[str, str]:
        if self._looker is None or self._looker.client is not client:
            self._close_looker()
            self._looker = MarkerLooker(client)
        self._markers = self._looker.look()
        return self._markers

    def _ssh_ready(self, client: paramiko.SSHClient) -> str | None:
        return "" if self._look(client).get("ssh-ready") == self.iid else None

    def _boot_outcome(self, client: paramiko.SSHClient) -> str | None:
        """"" when boot-done holds our IID, an error message when boot failed, else None.

        The markers ssh-ready's look read come first, when they say boot.sh is done. With
        the console read, a look is a line to the MarkerLooker's shell; without it (or to
        read a failure's record), boot_wait_command waits up to BOOT_WAIT_BATCH seconds in
        the guest."""
        markers, self._markers = self._markers, {}
        if markers.get("boot-done") == self.iid:
            return ""
        if self._led() is not None and markers.get("boot-failed") != self.iid:
            # A fresh look: boot.sh may have finished since, its line counted already.
            markers = self._look(client)
            self._markers = {}
            if markers.get("boot-done") == self.iid:
                return ""
            if markers.get("boot-failed") != self.iid:
                return None
        _, out, _ = run(client, boot_wait_command(self.iid), timeout=BOOT_WAIT_BATCH + 15)
        return parse_boot_wait(out, self.iid)

    def _poll(
        self,
        stop: threading.Event,
        deadline: float,
        check: Callable[[paramiko.SSHClient], str | None],
        wake: bytes = b"",
        fallback: float = _MARKER_POLL,
    ) -> str | None:
        """Run `check` until it returns a value, reconnecting as needed; None at the deadline.

        Between two checks: until the console shows `wake` once more than before the
        check, `fallback` seconds at most (with the console read), else _MARKER_POLL."""
        while not stop.is_set() and time.monotonic() < deadline:
            console = self._led()
            try:
                if self.client is None:
                    self.client = wait_ssh(self.port, self.user, self.key_path,
                                           deadline=deadline, banner=not self.resumed)
                    log.info("logged in over ssh")
                seen = console.count(wake) if console is not None else 0
                result = check(self.client)
            except TemporaryError as exc:
                log.debug("guest not ready yet: %s", exc)
                self.close()
                continue
            if result is not None:
                return result
            if console is not None:
                console.wait(wake, seen, min(fallback, max(0.0, deadline - time.monotonic())),
                             stop)
            else:
                stop.wait(_MARKER_POLL)
        return None
