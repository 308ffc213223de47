"""Readiness led by the console (lima.drivers.serialwatch.ConsoleTail, lima.drivers.ssh's
SSHGuest): boot.sh's markers are looked at in one command, again when boot.sh logs a line
or after a fallback interval, not five times a second."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lima.drivers import markers, serialwatch, ssh
from lima.drivers.serialwatch import FINISHED_LINE, LIMA_LINE, ConsoleTail

pytestmark = [pytest.mark.unit]


def _tail(log: Path) -> ConsoleTail:
    return ConsoleTail(log, poll=0.01).start()


def test_lines_are_counted_once_even_split_across_reads(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"  # not there yet: QEMU has not started
    tail = _tail(log)
    try:
        time.sleep(0.05)
        log.write_bytes(b"LIMA 2026-12-01T13:07:18| boot.sh starting\r\nLIMA 2026-12-01T13:0")
        assert tail.wait(LIMA_LINE, 0, 5) == 2
        with log.open("ab") as f:
            f.write(b"7:27| boot.sh fin")
        time.sleep(0.05)
        assert tail.count(FINISHED_LINE) == 0 and tail.count(LIMA_LINE) == 2
        with log.open("ab") as f:
            f.write(b"ished\r\n[   42.36] reboot: Power down\r\n")
        assert tail.wait(FINISHED_LINE, 0, 5) == 1
        time.sleep(0.05)
        assert tail.count(LIMA_LINE) == 2
    finally:
        tail.stop()


def test_wait_ends_at_its_timeout_or_the_callers_stop(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"LIMA x| boot.sh starting\n")
    tail = _tail(log)
    try:
        assert tail.wait(LIMA_LINE, 0, 5) == 1
        started = time.monotonic()
        assert tail.wait(LIMA_LINE, 1, 0.2) == 1
        assert 0.15 < time.monotonic() - started < 2
        stop = threading.Event()
        threading.Timer(0.1, stop.set).start()
        started = time.monotonic()
        tail.wait(LIMA_LINE, 1, 30, stop)
        assert time.monotonic() - started < 5
    finally:
        tail.stop()


def test_a_restarted_log_counts_on(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"LIMA a\n" + b"x" * 4096)
    tail = _tail(log)
    try:
        assert tail.wait(LIMA_LINE, 0, 5) == 1
        log.write_bytes(b"LIMA b\n")  # QEMU truncated it, then wrote
        assert tail.wait(LIMA_LINE, 1, 5) == 2
    finally:
        tail.stop()


class RunLooker:
    """markers.MarkerLooker, each look an ssh.run of markers_command (the tests' fakes)."""

    def __init__(self, client: Any, timeout: float = 20.0) -> None:
        self.client = client

    def look(self) -> dict[str, str]:
        _, out, _ = ssh.run(self.client, markers.markers_command(), timeout=20.0)
        return markers.parse_resumed_check(out)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _looks_are_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "MarkerLooker", RunLooker)


@pytest.mark.processes
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_looker_shell_answers_each_line_with_the_three_markers(
    tmp_path: Path, shell: str
) -> None:
    """looker_command: three lines at once, three more for each line read, with shell
    builtins only (no PATH), and the end of its input ends it."""
    import shutil
    import subprocess

    if not shutil.which(shell):
        pytest.skip(f"no {shell}")
    ready, done = tmp_path / "ready", tmp_path / "done"
    ready.write_text("iid-1\n")
    command = markers.looker_command().replace(markers.SSH_READY_MARKER, str(ready)).replace(
        markers.BOOT_DONE_MARKER, str(done))
    proc = subprocess.Popen([shutil.which(shell) or shell, "-c", command], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PATH": str(tmp_path / "none")})
    assert proc.stdin is not None and proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(3)]
    done.write_text("iid-1\n")
    proc.stdin.write("\n")
    proc.stdin.flush()
    second = [proc.stdout.readline() for _ in range(3)]
    proc.stdin.close()
    assert proc.wait(10) == 0 and proc.stderr is not None and proc.stderr.read() == ""
    assert markers.parse_resumed_check("".join(first)) == {
        "ssh-ready": "iid-1", "boot-done": "", "boot-failed": ""}
    assert markers.parse_resumed_check("".join(second))["boot-done"] == "iid-1"


class Guest:
    """What ssh.run sees: boot.sh's markers and console, as a booting guest changes them."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.markers = {"ssh-ready": "", "boot-done": "", "boot-failed": ""}
        self.commands: list[str] = []

    def run(self, _client: Any, command: str, *, timeout: float) -> tuple[int, str, str]:
        self.commands.append(command)
        if command.startswith(": lima-boot-wait;"):
            return 1, "", ""
        assert command == markers.markers_command()
        return 0, "".join(f"{k} {v}\n" for k, v in self.markers.items()), ""

    def write(self, **markers: str) -> None:
        """boot.sh writes a marker, then logs its line on the console."""
        self.markers.update({k.replace("_", "-"): v for k, v in markers.items()})
        line = "| boot.sh finished" if "boot_done" in markers else "| Executing x"
        with self.log.open("ab") as f:
            f.write(f"LIMA 2026-12-01T13:07:18{line}\r\n".encode())


def _guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ssh.SSHGuest, Guest]:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    fake = Guest(log)
    monkeypatch.setattr(ssh, "run", fake.run)
    monkeypatch.setattr(serialwatch, "watch_network_up", lambda *a: None)
    monkeypatch.setattr(serialwatch, "POLL", 0.01)
    guest = ssh.SSHGuest(22, "lima", tmp_path / "key", "iid-1", timeout=30, serial_log=log)
    guest.client = object()  # type: ignore[assignment]  # logged in: ssh.run is the fake's
    return guest, fake


def test_a_boot_done_at_the_first_login_takes_one_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest, fake = _guest(tmp_path, monkeypatch)
    fake.markers.update({"ssh-ready": "iid-1", "boot-done": "iid-1"})
    phases: list[str] = []
    assert guest.ready(threading.Event(), phases.append) == []
    assert phases == ["ssh_ready", "provisioned"]
    assert fake.commands == [markers.markers_command()] and guest.boot_failed is False


def test_looks_follow_boot_shs_console_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boot takes 1.2 s after the first login: a handful of looks (ssh-ready when its line
    came, boot-done when "boot.sh finished" did), not one every 0.2 s, and Running follows
    the last line at once."""
    guest, fake = _guest(tmp_path, monkeypatch)
    monkeypatch.setattr(ssh, "CONSOLE_FALLBACK_READY", 30.0)
    monkeypatch.setattr(ssh, "CONSOLE_FALLBACK_BOOT", 30.0)
    threading.Timer(0.3, lambda: fake.write(ssh_ready="iid-1")).start()
    threading.Timer(1.5, lambda: fake.write(boot_done="iid-1")).start()
    phases: list[str] = []
    started = time.monotonic()
    assert guest.ready(threading.Event(), phases.append) == []
    took = time.monotonic() - started
    assert phases == ["ssh_ready", "provisioned"]
    assert 1.4 < took < 5, took
    assert fake.commands == [markers.markers_command()] * 4  # ready: 2 looks; outcome: 2


def test_a_silent_console_falls_back_to_looking_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest, fake = _guest(tmp_path, monkeypatch)
    monkeypatch.setattr(ssh, "CONSOLE_FALLBACK_READY", 0.2)
    monkeypatch.setattr(ssh, "CONSOLE_FALLBACK_BOOT", 0.2)
    fake.markers["ssh-ready"] = "iid-1"

    def done_quietly() -> None:
        fake.markers["boot-done"] = "iid-1"  # no console line

    threading.Timer(0.5, done_quietly).start()
    phases: list[str] = []
    assert guest.ready(threading.Event(), phases.append) == []
    assert phases == ["ssh_ready", "provisioned"]
    assert 3 <= len(fake.commands) <= 8


def test_a_failed_boot_is_read_with_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest, fake = _guest(tmp_path, monkeypatch)
    fake.markers.update({"ssh-ready": "iid-1", "boot-failed": "iid-1"})

    def run(client: Any, command: str, *, timeout: float) -> tuple[int, str, str]:
        if command.startswith(": lima-boot-wait;"):
            fake.commands.append(command)
            return 0, "failed\niid-1\nprovision.system/00: exit 1\n", ""
        return Guest.run(fake, client, command, timeout=timeout)

    monkeypatch.setattr(ssh, "run", run)
    errors = guest.ready(threading.Event())
    assert errors == ["provisioning failed: provision.system/00: exit 1"]
    assert guest.boot_failed is True
    assert len(fake.commands) == 2 and fake.commands[1].startswith(": lima-boot-wait;")


@pytest.mark.parametrize("known", [False, True])
def test_a_resumed_guest_whose_boot_was_done_needs_no_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    """suspend.json's bootDone: the resumed guest's readiness is its login (and its clock),
    without a look at markers read before the state was saved."""
    commands: list[str] = []

    def run(_client: Any, command: str, *, timeout: float) -> tuple[int, str, str]:
        commands.append(command)
        if command == markers.markers_command():
            return 0, "ssh-ready iid-1\nboot-done iid-1\nboot-failed \n", ""
        return 0, f"clock {int(time.time())}\n", ""

    monkeypatch.setattr(ssh, "run", run)
    guest = ssh.SSHGuest(22, "lima", tmp_path / "key", "iid-1", timeout=30, resumed=True,
                         boot_done=known)
    guest.client = object()  # type: ignore[assignment]
    phases: list[str] = []
    assert guest.ready(threading.Event(), phases.append) == []
    assert phases == ["ssh_ready", "provisioned"] and guest.boot_failed is False
    assert (markers.markers_command() in commands) is not known
    assert len([c for c in commands if c.startswith("g=$(date")]) == 1


def test_the_saved_state_says_whether_its_boot_was_done(tmp_path: Path) -> None:
    import json

    from lima import paths
    from lima.drivers import suspend

    def save(**kw: Any) -> None:
        meta = suspend._meta(tmp_path, ["/usr/bin/qemu-system-x86_64"], "g1", "iid-1", 2222,
                             "7.2.0", **kw)
        (tmp_path / paths.SUSPEND_META).write_text(json.dumps(meta))

    (tmp_path / paths.SUSPEND_STATE).write_bytes(b"state")
    save(boot_done=True)
    assert suspend.boot_done_saved(tmp_path, "iid-1")
    assert not suspend.boot_done_saved(tmp_path, "iid-2")  # another boot's state
    save()
    assert not suspend.boot_done_saved(tmp_path, "iid-1")
    save(boot_done=True)
    (tmp_path / paths.SUSPEND_STATE).unlink()  # no complete state
    assert not suspend.boot_done_saved(tmp_path, "iid-1")


def test_without_a_serial_log_the_guest_waits_for_the_outcome_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No serial.log (a stand-in for qemu): boot_wait_command, as without a console."""
    guest, fake = _guest(tmp_path, monkeypatch)
    fake.log.unlink()
    fake.markers["ssh-ready"] = "iid-1"
    waits: list[str] = []

    def run(client: Any, command: str, *, timeout: float) -> tuple[int, str, str]:
        if command.startswith(": lima-boot-wait;"):
            waits.append(command)
            return 0, "done\n", ""
        return Guest.run(fake, client, command, timeout=timeout)

    monkeypatch.setattr(ssh, "run", run)
    assert guest.ready(threading.Event()) == []
    assert len(waits) == 1 and fake.commands == [markers.markers_command()]
