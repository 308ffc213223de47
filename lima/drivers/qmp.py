"""A small QMP client over the instance's qmp.sock, plus the stop helpers built on it.

Used by the host agent (graceful shutdown on SIGTERM, `quit`), the controller's observe
step (`query_status`) and `limactl stop`. QMP is line-delimited JSON: a greeting, then
`qmp_capabilities`, then commands answered by `return` or `error`; asynchronous events
may arrive between them and are collected in `QMPClient.events`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from lima.drivers import procs
from lima.errors import LimaError, TemporaryError
from lima.paths import QMP_SOCK

log = logging.getLogger(__name__)

_MAX_MESSAGE = 16 * 1024 * 1024  # a QMP reply larger than this is not one we asked for


class QMPError(LimaError):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP {command}: {error_class}: {desc}")


class QMPUnavailable(TemporaryError):
    """The QMP socket is missing, refuses connections, closed, or did not answer in time."""


class QMPClient:
    """One QMP session. Use as a context manager, or call connect() and close()."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)

    def __enter__(self) -> QMPClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> dict[str, Any]:
        """Connect, read the greeting, negotiate capabilities; returns the greeting."""
        deadline = time.monotonic() + self.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (OSError, ValueError) as exc:
            sock.close()
            raise QMPUnavailable(f"QMP socket {self.path}: {exc}", delay=0.5) from exc
        self._sock = sock
        try:
            greeting = self._read(deadline)
            if "QMP" not in greeting:
                raise QMPUnavailable(f"QMP socket {self.path}: unexpected greeting {greeting!r}")
            self.greeting = greeting
            self._command("qmp_capabilities", None, deadline)
        except BaseException:
            self.close()
            raise
        return self.greeting

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
            self._buf = b""

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its `return` value (usually a dict).

        Raises QMPError when QEMU answers with an error, QMPUnavailable when the socket
        closes or nothing answers within `timeout` (default: the client's timeout).
        """
        if self._sock is None:
            self.connect()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return self._command(command, arguments, deadline)

    def wait_event(self, name: str, until: float) -> dict[str, Any] | None:
        """The next `name` event (one collected already first), or None when none came by
        `until` (a time.monotonic() value). Raises QMPUnavailable when the socket closed."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") == name:
                    return self.events.pop(i)
            if self._sock is None:
                self.connect()
            if b"\n" not in self._buf and time.monotonic() >= until:
                return None
            try:
                message = self._read(until)
            except QMPUnavailable:
                if self._sock is None:
                    raise  # closed: QEMU is gone
                return None  # no message in time
            if "event" in message:
                self.events.append(message)

    def pass_fd(self, name: str, fd: int, *, timeout: float | None = None) -> None:
        """Hand QEMU a copy of `fd` under `name` (`getfd`, the fd sent with SCM_RIGHTS), for
        URIs such as `fd:NAME` (migrate, migrate-incoming)."""
        if self._sock is None:
            self.connect()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._command("getfd", {"fdname": name}, deadline, fd=fd)

    def _command(self, command: str, arguments: Mapping[str, Any] | None, deadline: float,
                 *, fd: int | None = None) -> Any:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments:
            msg["arguments"] = dict(arguments)
        self._send(msg, fd)
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != msg_id:
                continue  # a late answer to an earlier, timed-out command
            if "error" in reply:
                err = reply["error"]
                raise QMPError(command, str(err.get("class", "")), str(err.get("desc", "")))
            return reply.get("return")

    def _send(self, msg: Mapping[str, Any], fd: int | None = None) -> None:
        assert self._sock is not None
        data = json.dumps(msg).encode() + b"\n"
        try:
            if fd is not None:
                # The descriptor rides on the command's first bytes; the rest follows.
                sent = socket.send_fds(self._sock, [data], [fd])
                data = data[sent:]
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise QMPUnavailable(f"QMP socket {self.path}: send failed: {exc}") from exc

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next complete JSON message, waiting at most until `deadline`."""
        while b"\n" not in self._buf:
            sock = self._sock
            if sock is None:
                raise QMPUnavailable(f"QMP socket {self.path}: not connected")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPUnavailable(f"QMP socket {self.path}: no answer in time")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                raise QMPUnavailable(f"QMP socket {self.path}: no answer in time") from exc
            except OSError as exc:
                self.close()
                raise QMPUnavailable(f"QMP socket {self.path}: {exc}") from exc
            if not chunk:
                self.close()
                raise QMPUnavailable(f"QMP socket {self.path}: closed by QEMU")
            self._buf += chunk
            if len(self._buf) > _MAX_MESSAGE:
                self.close()
                raise QMPUnavailable(f"QMP socket {self.path}: oversized message")
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise QMPUnavailable(f"QMP socket {self.path}: bad JSON {line[:80]!r}") from exc
        if not isinstance(value, dict):
            raise QMPUnavailable(f"QMP socket {self.path}: unexpected message {line[:80]!r}")
        return value


def query_status(sock: Path, *, timeout: float = 2.0) -> str | None:
    """QEMU's run state ("running", "paused", "prelaunch", "shutdown", ...), None if silent."""
    try:
        with QMPClient(sock, timeout=timeout) as qmp:
            reply = qmp.execute("query-status")
    except (QMPUnavailable, QMPError) as exc:
        log.debug("query-status on %s: %s", sock, exc)
        return None
    status = reply.get("status") if isinstance(reply, dict) else None
    return status if isinstance(status, str) else None


def _send_and_wait(inst_dir: Path, command: str, timeout: float) -> bool:
    pid = procs.qemu_pid(inst_dir)
    if pid is None:
        return True
    started = time.monotonic()
    try:
        with QMPClient(inst_dir / QMP_SOCK, timeout=min(timeout, 5.0)) as qmp:
            qmp.execute(command)
    except QMPUnavailable as exc:
        # `quit` may close the socket before its answer arrives; the pid decides.
        log.debug("QMP %s on %s: %s", command, inst_dir, exc)
    except QMPError as exc:
        log.warning("QMP %s refused: %s", command, exc)
    remaining = max(0.0, timeout - (time.monotonic() - started))
    exited = procs.wait_exit(pid, remaining)
    log.debug("QMP %s: qemu pid %d %s", command, pid, "exited" if exited else "still running")
    return exited


def powerdown(inst_dir: Path, *, timeout: float) -> bool:
    """ACPI power button (`system_powerdown`), then wait up to `timeout` s for qemu to exit.

    Returns whether this instance's qemu (the PID in qemu.pid) is gone. The caller kills
    it when this returns False (`procs.kill_qemu`).
    """
    return _send_and_wait(inst_dir, "system_powerdown", timeout)


def quit(inst_dir: Path, *, timeout: float = 5.0) -> bool:
    """Make qemu exit at once (`quit`: no guest shutdown); returns whether it is gone."""
    return _send_and_wait(inst_dir, "quit", timeout)
