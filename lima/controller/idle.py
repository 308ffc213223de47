"""Idle suspend: `limactl controller DIR --suspend-idle DURATION`.

`lima.controller.folder.FolderController` asks an `IdleWatch` after every pass that left
an instance Running whether it has been idle long enough; when it has, the controller
writes the marker `_controller/NAME.idle` and suspends the instance. While the marker
names the current file version and the saved state is there, the controller counts the
instance as converged (it does not resume it); `limactl shell NAME` (or `start`) resumes
it, the controller then finds it running, drops the marker and starts measuring again.
The marker is on disk so a restarted controller keeps the instance asleep.

Idle means no ssh session and no forwarded connection, measured on the host:
- ssh sessions: every `limactl shell`, `lima`, `limactl copy` and `ssh -F ssh.config
  lima-NAME` is a client of the instance's ssh ControlMaster, connected to `ssh.sock` for
  as long as the session lasts (with ControlPersist even the first client becomes one);
  the kernel lists each accepted connection under the socket's path in /proc/net/unix.
  limapy's own connections (the host agent's paramiko sessions, reverse forwards with
  ControlPath=none) do not go through it, so they never keep an instance awake. Counting
  the guest's sshd sessions instead would need an ssh round trip under TCG every pass and
  could not tell the host agent's sessions from a user's.
- forwarded connections: the host agent counts the connections its listeners carry and
  reports them as `openConnections` in `GET /v1/info`. Connections QEMU carries itself
  (a `hostfwd` for a listener on a wildcard guest address) are not seen.
A measurement that fails (no host agent answers) counts as busy: never suspend blindly.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.controller import managed
from lima.drivers import safefs

log = logging.getLogger(__name__)

IDLE_SUFFIX = ".idle"
_CONNECTED = "03"  # SS_CONNECTED in /proc/net/unix's St column


@dataclass(frozen=True)
class Activity:
    sessions: int  # ssh sessions through the instance's ControlMaster
    connections: int  # forwarded connections the host agent carries

    @property
    def busy(self) -> bool:
        return self.sessions > 0 or self.connections > 0


# instance name -> its activity now, or None when it cannot be measured
ActivityProbe = Callable[[str], Activity | None]


def unix_peers(sock: Path, table: str = "/proc/net/unix") -> int:
    """Connections accepted on the listening unix socket `sock` that are still open."""
    target = str(sock)
    n = 0
    try:
        with open(table, encoding="utf-8", errors="replace") as f:
            next(f, None)  # the header
            for line in f:
                cols = line.split(maxsplit=7)
                if len(cols) == 8 and cols[7].rstrip("\n") == target and cols[5] == _CONNECTED:
                    n += 1
    except OSError:
        return 0
    return n


def host_activity(name: str) -> Activity | None:
    """The real probe: ssh.sock's clients and the host agent's open forwarded connections."""
    from lima.drivers.hostagent import hostagent_info  # deferred: the fake's tests

    inst = paths.instance_dir(name)
    info = hostagent_info(inst)
    if info is None:
        return None
    conns = info.get("openConnections")
    if not isinstance(conns, int):
        return None  # an agent from before the count: cannot tell
    return Activity(unix_peers(inst / paths.SSH_SOCK), conns)


class IdleWatch:
    """When each running instance was first seen idle (in memory: a restarted controller
    measures afresh, which only ever delays a suspend)."""

    def __init__(self, after: float, probe: ActivityProbe = host_activity) -> None:
        self.after = after
        self.probe = probe
        self._since: dict[str, float] = {}
        self.last: Activity | None = None

    def left(self, name: str, now: float) -> float | None:
        """Seconds until `name` has been idle for `after` (<= 0: suspend now), or None
        when it is in use (its idle time starts again)."""
        self.last = activity = self.probe(name)
        if activity is None or activity.busy:
            self._since.pop(name, None)
            return None
        since = self._since.setdefault(name, now)
        return self.after - (now - since)

    def idle_for(self, name: str, now: float) -> float:
        since = self._since.get(name)
        return 0.0 if since is None else now - since

    def reset(self, name: str) -> None:
        self._since.pop(name, None)


def read_marker(name: str) -> str | None:
    """The file digest recorded when the controller suspended `name` for idleness."""
    try:
        raw = safefs.read_private_file(_path(name), 4096)
    except (OSError, safefs.UnsafeFileError):
        return None
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    digest = doc.get("digest") if isinstance(doc, dict) else None
    return digest if isinstance(digest, str) else None


def write_marker(name: str, digest: str, idle_for: float) -> None:
    p = _path(name)
    safefs.ensure_owned_dir(p.parent)
    doc = {"digest": digest, "idleFor": round(idle_for, 1)}
    safefs.write_private_file(p, (json.dumps(doc) + "\n").encode())


def clear_marker(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(name).unlink()


def _path(name: str) -> Path:
    managed.paused_path(name)  # validates the name
    return managed.control_dir() / f"{name}{IDLE_SUFFIX}"
