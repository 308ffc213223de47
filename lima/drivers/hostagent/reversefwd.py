"""`reverse: true` port forwards: a host unix socket made reachable inside the guest.

Used by the port forwarder (lima.drivers.hostagent.portfwd) for each reverse rule
(lima.drivers.portrules.reverse_rules). Like Lima, the guest's sshd listens on the guest
socket and carries each connection back to the host socket (`ssh -R GUEST:HOST`, OpenSSH's
streamlocal-forward@openssh.com). paramiko's client cannot accept the channels that
request opens, so a `ReverseForward` runs the system `ssh -N -R` as a child of the host
agent (through lima.drivers.runner), with StreamLocalBindUnlink so a stale guest socket is
replaced and ExitOnForwardFailure so a refused forward ends it at once. The child is
started again (with a growing pause) when it exits while the forward should run: the
guest rebooted, sshd restarted, or the guest refused it (dropbear, in build:tiny, has no
streamlocal forwarding: `on_failure` then says why, once per distinct reason). close() ends
the child and removes the guest socket (`rm -f`, as Lima does when it cancels one).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
from collections.abc import Callable, Sequence
from typing import IO

from lima.drivers import runner

log = logging.getLogger(__name__)

PAUSE, MAX_PAUSE = 1.0, 60.0  # seconds before starting ssh again, doubled per failure
_STOP_WAIT = 3.0


def reverse_argv(ssh_base: Sequence[str], guest_socket: str, host_socket: str) -> list[str]:
    """The ssh command of one reverse forward. `ssh_base` is `ssh -F ssh.config` ... up to
    (not including) the host alias, which is its last element."""
    *base, alias = ssh_base
    return [*base, "-N", "-T",
            "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
            # Its own connection: a forward must not ride on (or keep alive) a `limactl
            # shell` master, nor die with it.
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "ServerAliveInterval=15", "-o", "BatchMode=yes",
            "-R", f"{guest_socket}:{host_socket}", alias]


class ReverseForward:
    def __init__(self, ssh_base: Sequence[str], guest_socket: str, host_socket: str, *,
                 remove_guest: Callable[[str], None] | None = None,
                 on_failure: Callable[[str], None] | None = None,
                 pause: float = PAUSE) -> None:
        self.guest_socket, self.host_socket = guest_socket, host_socket
        self.argv = reverse_argv(ssh_base, guest_socket, host_socket)
        self.remove_guest, self.on_failure = remove_guest, on_failure
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.proc: runner.Popen[bytes] | None = None
        self.starts = 0  # ssh processes started (tests read it)
        self._reasons: set[str] = set()
        threading.Thread(target=self._run, name=f"reverse {guest_socket}", daemon=True).start()

    def _run(self) -> None:
        pause = self.pause
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self.proc = proc = runner.spawn(self.argv, stdout=runner.DEVNULL,
                                                    stderr=runner.PIPE)
                except runner.CommandError as exc:
                    self._failed(str(exc))
                    return
                self.starts += 1
            log.info("forwarding %s (host) to %s (guest): %s", self.host_socket,
                     self.guest_socket, shlex.join(self.argv))
            err = _read_all(proc.stderr)
            code = proc.wait()
            if self._stop.is_set():
                return
            why = err.decode(errors="replace").strip()
            why = why.splitlines()[-1] if why else f"ssh exited with status {code}"
            log.warning("reverse forward %s -> %s ended: %s", self.guest_socket,
                        self.host_socket, why)
            self._failed(why)
            self._stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE)

    def _failed(self, why: str) -> None:
        if why in self._reasons or self.on_failure is None:
            return
        self._reasons.add(why)
        with contextlib.suppress(Exception):
            self.on_failure(why)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_WAIT)
            except runner.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.remove_guest is not None:
            try:
                self.remove_guest(self.guest_socket)
            except Exception as exc:  # the guest may be gone already
                log.info("cannot remove %s in the guest: %s", self.guest_socket, exc)


def _read_all(stream: IO[bytes] | None) -> bytes:
    if stream is None:
        return b""
    with contextlib.suppress(OSError, ValueError):
        data = stream.read()
        stream.close()
        return data[-4096:]
    return b""
