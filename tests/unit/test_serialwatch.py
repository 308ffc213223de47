"""lima.drivers.serialwatch: the guest's console log read for its "network is up" line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lima.drivers import serialwatch, sshprobe
from lima.drivers.guest import NETWORK_UP_LINE


def _watch(log: Path, stop: threading.Event) -> tuple[threading.Thread, threading.Event]:
    seen = threading.Event()
    thread = threading.Thread(target=serialwatch.find_line, args=(log, stop, seen.set),
                              kwargs={"poll": 0.01}, daemon=True)
    thread.start()
    return thread, seen


def test_the_line_is_found_as_the_log_grows_even_split_across_reads(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"  # not there yet: QEMU has not started
    stop = threading.Event()
    thread, seen = _watch(log, stop)
    time.sleep(0.05)
    log.write_bytes(b"[    0.000000] Linux version 6.1\r\n" + NETWORK_UP_LINE[:6].encode())
    time.sleep(0.05)
    assert not seen.is_set()
    with log.open("ab") as f:
        f.write(NETWORK_UP_LINE[6:].encode() + b"\r\n")
    thread.join(5)
    assert seen.is_set() and not thread.is_alive()


def test_a_restarted_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"x" * 4096)
    stop = threading.Event()
    thread, seen = _watch(log, stop)
    time.sleep(0.05)
    log.write_bytes(NETWORK_UP_LINE.encode() + b"\n")  # QEMU truncated it, then wrote
    thread.join(5)
    assert seen.is_set()


def test_stop_ends_the_watch_without_the_line(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("login: \n")
    stop = threading.Event()
    thread, seen = _watch(log, stop)
    time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and not seen.is_set()


def test_the_watch_tells_the_ssh_prober(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sshprobe, "_network_up", set())
    log = tmp_path / "serial.log"
    log.write_text(f"cloud-init bootcmd\n{NETWORK_UP_LINE}\n")
    stop = threading.Event()
    serialwatch.watch_network_up(log, 2222, stop).join(5)
    assert 2222 in sshprobe._network_up


@pytest.mark.parametrize("resumed", [False, True])
def test_a_cold_boots_readiness_watches_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed: bool
) -> None:
    """SSHGuest.ready() reads serial.log while it waits for ssh on a cold boot (a resumed
    guest's network is up already, and its console says nothing new)."""
    import socket

    from lima.drivers.ssh import SSHGuest
    from lima.errors import TemporaryError

    monkeypatch.setattr(sshprobe, "_network_up", set())
    log = tmp_path / "serial.log"
    log.write_text(f"{NETWORK_UP_LINE}\n")
    with socket.socket() as s:  # a port nothing listens on: readiness times out
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guest = SSHGuest(port, "lima", tmp_path / "key", "iid-1", timeout=1.0, resumed=resumed,
                     serial_log=log)
    with pytest.raises(TemporaryError):
        guest.ready(threading.Event())
    assert (port in sshprobe._network_up) is not resumed
