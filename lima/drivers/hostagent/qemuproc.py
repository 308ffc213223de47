"""The qemu process a host agent keeps: one it started, or one it re-attached to.

`lima.drivers.hostagent.HostAgent` holds a `QemuProcess`. A host agent that died (kill -9,
OOM) leaves its qemu running; the agent that replaces it attaches to that qemu by its PID
(checked against /proc: a qemu-system whose -pidfile is this instance's qemu.pid) instead
of booting the guest again. Both kinds answer the same questions: is it still running,
wait for it, kill it; only a child we started has an exit status to report.
"""

from __future__ import annotations

import time
from pathlib import Path

from lima.drivers import procs, runner

_POLL = 0.2  # an attached qemu is not our child: its exit is noticed by polling /proc


class QemuProcess:
    """A running qemu: `popen` when this agent started it, else attached by `pid`."""

    def __init__(self, pid: int, inst_dir: Path,
                 popen: runner.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.inst_dir = inst_dir
        self.popen = popen

    @classmethod
    def started(cls, popen: runner.Popen[bytes], inst_dir: Path) -> QemuProcess:
        return cls(popen.pid, inst_dir, popen)

    @classmethod
    def attach(cls, inst_dir: Path) -> QemuProcess | None:
        """The instance's running qemu, or None when there is none to attach to."""
        pid = procs.qemu_pid(inst_dir)
        return None if pid is None else cls(pid, inst_dir)

    @property
    def attached(self) -> bool:
        return self.popen is None

    @property
    def returncode(self) -> int | None:
        """The exit status (an attached qemu's is unknown: -1 once it is gone)."""
        if self.popen is not None:
            return self.popen.returncode
        return None if self._attached_alive() else -1

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: forever); returns whether qemu is gone."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except runner.TimeoutExpired:
                return False
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._attached_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def kill(self) -> None:
        """SIGKILL, only after checking the PID still is this instance's qemu."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait()
            return
        procs.kill_qemu(self.inst_dir, force=True)

    def _attached_alive(self) -> bool:
        return procs.pid_alive(self.pid) and procs.is_instance_qemu(self.pid, self.inst_dir)
