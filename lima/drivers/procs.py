"""Process facts for the QEMU driver: pid files, liveness, and killing only our own qemu.

Called by `lima.drivers.qmp` (powerdown waits for the pid), the host agent and the
controller's observe step. Linux-only: liveness and identity come from /proc, so a zombie
(an exited child not reaped yet) counts as dead and a recycled PID is never signalled.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from lima.paths import HA_PID, QEMU_PID

_POLL = 0.05  # seconds between liveness checks while waiting for an exit


def read_pid(path: Path) -> int | None:
    """The PID in a pid file, or None when the file is missing, empty or garbage."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def _proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, D, Z, X, ...), None if there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    tail = raw[raw.rfind(")") + 1 :].split()
    return tail[0] if tail else None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie or a dead pid is not alive."""
    if pid <= 0:
        return False
    state = _proc_state(pid)
    if state is None:
        # No /proc entry (or no /proc at all): fall back to signal 0.
        try:
            os.kill(pid, 0)
        except OSError as exc:
            return exc.errno == errno.EPERM
        return True
    return state not in ("Z", "X", "x")


def cmdline(pid: int) -> list[str]:
    """The argv of a running process ([] when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _same_file(a: str, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def is_instance_qemu(pid: int, inst_dir: Path) -> bool:
    """True when `pid` is a qemu-system process started for this instance.

    Two facts must hold: argv[0] is a qemu-system binary, and its `-pidfile` is this
    instance's qemu.pid. A PID recycled by an unrelated process (or by another
    instance's qemu) fails one of them.
    """
    argv = cmdline(pid)
    if not argv or "qemu-system" not in os.path.basename(argv[0]):
        return False
    want = inst_dir / QEMU_PID
    for i, arg in enumerate(argv[:-1]):
        if arg == "-pidfile" and _same_file(argv[i + 1], want):
            return True
    return False


def qemu_pid(inst_dir: Path) -> int | None:
    """The PID of this instance's live qemu, from qemu.pid, checked; None when not running."""
    pid = read_pid(inst_dir / QEMU_PID)
    if pid is None or not pid_alive(pid) or not is_instance_qemu(pid, inst_dir):
        return None
    return pid


def is_instance_hostagent(pid: int, inst_dir: Path) -> bool:
    """True when `pid` is the host agent of this instance: a `hostagent` command whose
    last argument is the instance's name and whose cwd is its directory (the agent is
    started there), so a recycled PID, or another instance's agent, never matches."""
    argv = cmdline(pid)
    if "hostagent" not in argv or argv[-1] != inst_dir.name:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return _same_file(cwd, inst_dir)


def hostagent_pid(inst_dir: Path) -> int | None:
    """The PID of this instance's live host agent, from ha.pid, checked; else None."""
    pid = read_pid(inst_dir / HA_PID)
    if pid is None or not pid_alive(pid) or not is_instance_hostagent(pid, inst_dir):
        return None
    return pid


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; returns whether it did.

    A zombie counts as exited; reaping it is left to its parent (the host agent owns
    qemu and wants its exit status).
    """
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def kill_qemu(inst_dir: Path, *, force: bool, timeout: float = 5.0) -> bool:
    """Stop this instance's qemu by its PID: SIGTERM, then SIGKILL after `timeout`.

    With `force`, SIGKILL at once. Only the PID from qemu.pid is signalled, and only after
    `is_instance_qemu` confirms it. Returns True when no qemu of this instance is left.
    """
    pid = qemu_pid(inst_dir)
    if pid is None:
        return True
    signals = [signal.SIGKILL] if force else [signal.SIGTERM, signal.SIGKILL]
    for sig in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_exit(pid, timeout):
            return True
    return not pid_alive(pid)
