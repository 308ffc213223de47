"""mountInotify: host file changes under writable mounts made visible to guest inotify watchers.

Started by the host agent's guest (lima.commands.hostagent, once the mounts are up) when
lima.yaml sets `mountInotify: true`; stopped with the guest's sessions. As Lima's host agent
does: every writable mount's host directory is watched recursively (created, written, and
attribute changes); for each changed path that still exists the guest sets the file's times
to the host's modification time, an attribute change its own inotify watchers see. Lima's
caveats hold: removals are not forwarded, and 9p shows no events for nested files.

Delivery: Lima's guest agent receives the events over gRPC. limapy's guest agents (python
and busybox sh) only report ports, so one long-lived ssh exec channel runs a small shell
loop as root that reads `SECONDS.NANOS PATH` lines and runs `touch -c -d @SECONDS.NANOS PATH`.
busybox's touch takes whole seconds only, and truncating would move the host file's time;
there the loop changes the file's mode to the mode it has, an attribute change as well
that leaves the times alone. Events are coalesced per path and
sent in batches every FLUSH_INTERVAL; an echo of our own touch (the host sees the guest's
change of times) is dropped, as Lima drops repeats within 10 ms of the last time sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence

import paramiko
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lima.schemas.spec import Mount

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds events are coalesced before a batch goes to the guest
REPEAT_WINDOW_NS = 10_000_000  # Lima: an event within 10 ms of the time last sent is an echo
CACHE_SIZE = 10000  # Lima's: the per-path memory of times sent is reset at this size
EVENTS = ("created", "modified", "closed")  # watchdog's names (IN_ATTRIB is "modified")

# The guest's end: one `SECONDS.NANOS PATH` per line; runs as root so any file's times
# can be set.
GUEST_LOOP = ('while IFS= read -r line; do t=${line%% *}; p=${line#* }; '
              '[ -e "$p" ] || continue; '
              'touch -c -d "@$t" "$p" 2>/dev/null || chmod "$(stat -c %a "$p")" "$p"; '
              'done >/dev/null 2>&1')

Opener = Callable[[], paramiko.Channel]


def watched(mounts: Sequence[Mount]) -> list[tuple[str, str]]:
    """(host directory to watch, guest mount point) of each writable mount, as Lima picks
    them. The host side is the real path (the kernel reports events under it)."""
    return [(os.path.realpath(m.location), m.mount_point) for m in mounts if m.writable]


def guest_path(host_path: str, table: Sequence[tuple[str, str]]) -> str | None:
    """The guest's name for `host_path` under one of the watched mounts (longest match)."""
    best: tuple[str, str] | None = None
    for host, guest in table:
        if (host_path == host or host_path.startswith(host.rstrip("/") + "/")) and (
                best is None or len(host) > len(best[0])):
            best = (host, guest)
    if best is None:
        return None
    return best[1].rstrip("/") + host_path[len(best[0].rstrip("/")):] or "/"


def batch(times: Iterable[tuple[str, int]]) -> bytes:
    """The lines GUEST_LOOP reads (times in ns, written exactly); a path holding a newline
    cannot be written and is left out."""
    return b"".join(f"{t // 10**9}.{t % 10**9:09d} {p}\n".encode() for p, t in times
                    if "\n" not in p)


class Coalescer:
    """Pending changes, one per path (the newest time wins), and the echo filter."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, path: str, mtime_ns: int) -> None:
        with self.lock:
            last = self.sent.get(path)
            if last is not None and mtime_ns - last < REPEAT_WINDOW_NS:
                return  # our own touch coming back, or a repeat of one already sent
            self.pending[path] = mtime_ns

    def take(self) -> list[tuple[str, int]]:
        with self.lock:
            out, self.pending = list(self.pending.items()), {}
            if len(self.sent) + len(out) >= CACHE_SIZE:
                self.sent = {}
            self.sent.update(out)
            return out


class _Handler(FileSystemEventHandler):
    def __init__(self, table: Sequence[tuple[str, str]], pending: Coalescer) -> None:
        self.table, self.pending = table, pending

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in EVENTS:
            return
        host = os.fsdecode(event.src_path)
        try:
            mtime = os.stat(host).st_mtime_ns
        except OSError:
            return  # gone already: removals are not forwarded (as in Lima)
        guest = guest_path(host, self.table)
        if guest is not None:
            self.pending.add(guest, mtime)


class InotifyForwarder:
    """Watches the writable mounts; a thread sends coalesced batches over `open_channel()`'s
    channel (a new one when the guest's loop ended)."""

    def __init__(self, mounts: Sequence[Mount], open_channel: Opener) -> None:
        self.table = watched(mounts)
        self.open_channel = open_channel
        self.pending = Coalescer()
        self._stop = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._chan: paramiko.Channel | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.table:
            log.info("mountInotify: no writable mount to watch")
            return
        observer = Observer()
        handler = _Handler(self.table, self.pending)
        for host, guest in self.table:
            log.info("enable inotify for writable mount: %s (guest %s)", host, guest)
            observer.schedule(handler, host, recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._send_loop, name="inotify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(5)
        if self._thread is not None:
            self._thread.join(5)
        self._close_channel()

    def _send_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            items = self.pending.take()
            if items:
                self._send(batch(items), len(items))

    def _send(self, data: bytes, count: int) -> None:
        for _attempt in range(2):  # once more on a fresh channel when the old one died
            try:
                if self._chan is None or self._chan.exit_status_ready():
                    self._close_channel()
                    self._chan = self.open_channel()
                self._chan.sendall(data)
                log.debug("inotify: %d change(s) sent to the guest", count)
                return
            except (OSError, EOFError, paramiko.SSHException) as exc:
                log.warning("inotify: cannot send to the guest: %s", exc)
                self._close_channel()
        log.warning("inotify: %d change(s) dropped", count)

    def _close_channel(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.close()
            self._chan = None


def channel_opener(client: paramiko.SSHClient, user: str) -> Opener:
    """Opens an exec channel on `client` running GUEST_LOOP as root (`sudo -n` unless the
    ssh user is root)."""
    import shlex

    command = f"sh -c {shlex.quote(GUEST_LOOP)}"
    if user != "root":
        command = f"sudo -n {command}"

    def open_channel() -> paramiko.Channel:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("ssh connection is closed")
        chan = transport.open_session(timeout=10)
        chan.exec_command(command)
        return chan

    return open_channel

