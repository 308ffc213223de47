"""The guest's serial console log, read for the line that says its network is up.

cloud-init's bootcmd (lima.drivers.cloudconfig.boot_hook_script) writes NETWORK_UP_LINE
(lima.drivers.guest) to the console first thing: bootcmd runs in cloud-init's network
stage, so the guest's NIC is up, and sshd starts a second or two later. Until then the
host cannot tell a guest whose NIC is still down from one whose sshd is not listening yet,
and the ssh prober (lima.drivers.sshprobe) only learns that the NIC is up when QEMU's user
network delivers a connection attempt to the guest and the guest refuses it: with its
probes staggered on slirp's own retry schedule, that came 1-3 s after sshd was listening.
Told by this watcher, it probes at once and every quarter second, so the first login
follows sshd within that.

The host agent starts `watch_network_up` for a cold boot (SSHGuest.ready) and stops it once
ssh is ready. QEMU truncates serial.log when it starts (the chardev's `logappend` is off),
so every line in it is this boot's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from lima.drivers.guest import NETWORK_UP_LINE

POLL = 0.1  # seconds between looks at the log
_CHUNK = 1 << 16


def find_line(log: Path, stop: threading.Event, found: Callable[[], None],
              line: str = NETWORK_UP_LINE, poll: float = POLL) -> None:
    """Read `log` as it grows until `line` appears in it (then call `found()`) or `stop`
    is set. A log that is missing or shrinks (QEMU started again) is read from the start."""
    needle = line.encode()
    offset = 0
    tail = b""
    while not stop.is_set():
        try:
            with log.open("rb") as f:
                size = f.seek(0, 2)
                if size < offset:
                    offset, tail = 0, b""
                f.seek(offset)
                while chunk := f.read(_CHUNK):
                    offset += len(chunk)
                    if needle in tail + chunk:
                        found()
                        return
                    tail = (tail + chunk)[-len(needle):]
        except OSError:
            offset, tail = 0, b""
        stop.wait(poll)


def watch_network_up(log: Path, port: int, stop: threading.Event) -> threading.Thread:
    """Start a thread that tells lima.drivers.sshprobe the guest's network is up (for ssh on
    127.0.0.1:`port`) once `log` shows NETWORK_UP_LINE; it ends then or once `stop` is set."""
    from lima.drivers import sshprobe

    thread = threading.Thread(target=find_line,
                              args=(log, stop, lambda: sshprobe.network_up(port)),
                              name="serial-network-up", daemon=True)
    thread.start()
    return thread
