"""ssh faults on the tiny guest, through the real CLI: instance names with '.' and '_',
a guest that stops answering (paused with QMP `stop`), and a fixed ssh.localPort that is
in TIME_WAIT after a stop or held by another process.

The name, terminal and paused-guest checks share one instance, `my_vm.1` (booted once for
the module; a boot each would cost more than the checks): they run in file order, each
leaves it running, and each first makes sure it got a running instance, so one failure
does not fail the ones after it. The fixed-port checks need their own spec and boots."""

from __future__ import annotations

import os
import pty
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.drivers.qmp import QMPClient
from tests.integration.conftest import REPO, Limactl, private_home, qemu_pids_for

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "tiny.yaml"
NAME = "my_vm.1"  # '.' and '_' are not valid in a host name: the guest's is lima-my-vm-1
HOST = "lima-my-vm-1"


def _tiny(tmp_path: Path, name: str, extra: str = "") -> Path:
    f = tmp_path / f"{name}.yaml"
    shutil.copy(EXAMPLE, f)
    if extra:
        f.write_text(f.read_text() + extra)
    return f


def _timed(limactl: Limactl, *args: str, timeout: float = 300,
           ) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = limactl(*args, check=False, timeout=timeout)
    return time.monotonic() - start, proc


def _ssh(config: Path, host: str, *extra: str,
         ) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run(["ssh", "-F", str(config), *extra, host, "true"],
                          capture_output=True, text=True, timeout=120)
    return time.monotonic() - start, proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _leave_time_wait(port: int) -> None:
    """A closed connection whose local port is `port`, in TIME_WAIT (its end closed first)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""


def _sockets_on(port: int) -> list[str]:
    """States (hex, /proc/net/tcp) of every IPv4 socket whose local port is `port`."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.append(fields[3])
    return states


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Limactl, Path]]:
    """The module's tiny instance NAME, booted once; a failed boot fails every test that
    uses it, each with this fixture's error."""
    spec = _tiny(tmp_path_factory.mktemp("faults-ssh"), NAME)
    with private_home() as limactl:
        limactl("apply", str(spec), timeout=300)
        yield limactl, spec


@pytest.fixture
def on_shared(shared: tuple[Limactl, Path]) -> Limactl:
    """The shared instance, running (one an earlier test left otherwise is applied again,
    and the test says so); returns its limactl."""
    limactl, spec = shared
    listed = limactl("list", "--format", "json", NAME, check=False).stdout
    if '"Running"' not in listed:
        print(f"the shared instance was not running ({listed.strip()}): applying it again")
        limactl("apply", str(spec), timeout=300)
    return limactl


def test_dotted_underscored_name_shell_and_ssh_config(on_shared: Limactl) -> None:
    limactl = on_shared
    shell = limactl("shell", NAME, "uname", "-n", check=False, timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == HOST
    assert limactl("shell", NAME, "true", check=False, timeout=60).returncode == 0
    elapsed, ssh = _ssh(limactl.home / NAME / "ssh.config", HOST)
    assert ssh.returncode == 0, ssh.stderr
    assert elapsed < 30


class _Terminal:
    """`limactl shell t` on a pseudo-terminal, as a user at a terminal runs it."""

    def __init__(self, limactl: Limactl, name: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lima.cli", "shell", name], stdin=slave, stdout=slave,
            stderr=slave, env=limactl.env(), cwd=REPO, start_new_session=True)
        os.close(slave)
        self.output = bytearray()
        self.closed_at = 0.0  # when the terminal lost its last writer (ssh exited)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                chunk = b""
            if not chunk:
                self.closed_at = time.monotonic()
                return
            self.output += chunk

    def wait_for(self, text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, bytes(self.output)
            assert time.monotonic() < deadline, bytes(self.output)
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_terminal_session_behaves_as_plain_ssh(on_shared: Limactl) -> None:
    # ssh runs as limactl's child (not exec'd): keys still reach the guest, and the
    # session's exit status is limactl's.
    term = _Terminal(on_shared, NAME)
    try:
        os.write(term.master, b"sleep 100; echo SLEPT-$((2 + 3))\n")
        time.sleep(2)
        os.write(term.master, b"\x03")  # Ctrl-C: a byte for the guest's shell, in raw mode
        os.write(term.master, b"echo AFTER-$((1 + 1))\n")
        term.wait_for(b"AFTER-2", timeout=30)
        assert b"SLEPT-5" not in term.output  # the sleep was interrupted
        os.write(term.master, b"exit 7\n")
        assert term.proc.wait(timeout=30) == 7
        assert b"does not answer" not in term.output
    finally:
        term.close()


@pytest.fixture
def paused_tiny(on_shared: Limactl) -> Iterator[Path]:
    """The shared instance, running and already shelled into once (so an ssh master
    runs); the test pauses it. Always resumed at the end, never killed here."""
    assert on_shared("shell", NAME, "true", timeout=60).returncode == 0
    sock = on_shared.home / NAME / "qmp.sock"
    try:
        yield sock
    finally:
        with QMPClient(sock) as qmp:
            qmp.execute("cont")


def test_shell_to_a_paused_guest_fails_in_time_and_works_after_resume(
    on_shared: Limactl, paused_tiny: Path
) -> None:
    limactl = on_shared
    qemu = qemu_pids_for(limactl.home)
    # A healthy guest is never cut: a command silent for longer than ssh's keepalive
    # limit (15-20 s) still runs to its end, because sshd answers every ask.
    elapsed, proc = _timed(limactl, "shell", NAME, "sh", "-c", "sleep 25; echo done",
                           timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done" and elapsed >= 25

    # An interactive session, open when the guest freezes.
    term = _Terminal(limactl, NAME)
    try:
        os.write(term.master, b"echo READY-$((40 + 2))\n")
        term.wait_for(b"READY-42", timeout=60)

        with QMPClient(paused_tiny) as qmp:
            qmp.execute("stop")  # vCPUs frozen; qemu (and the port it forwards) stays up
        paused = time.monotonic()

        # A new command, through the running ssh master: its keepalives go unanswered.
        elapsed, proc = _timed(limactl, "shell", NAME, "true", timeout=120)
        print(f"shell to a paused guest (through the master): exit {proc.returncode} "
              f"after {elapsed:.1f} s\n{proc.stderr}")
        assert proc.returncode == 255
        assert elapsed < 60
        assert f"instance {NAME} does not answer over ssh" in proc.stderr
        assert f"`limactl stop -f {NAME}`" in proc.stderr
        assert "paused" in proc.stderr

        # The interactive session ended too, and said why on its terminal.
        rc = term.proc.wait(timeout=max(1.0, paused + 60 - time.monotonic()))
        shown = bytes(term.output).split(b"READY-42", 1)[1].decode(errors="replace")
        print(f"interactive shell on a paused guest: exit {rc} after "
              f"{term.closed_at - paused:.1f} s; its terminal then showed {shown!r}")
        assert rc == 255
        assert term.closed_at - paused < 60
        assert f"instance {NAME} does not answer over ssh" in shown
        assert f"`limactl stop -f {NAME}`" in shown
    finally:
        term.close()

    # A fresh connection with ssh.config alone: no banner comes.
    config = limactl.home / NAME / "ssh.config"
    elapsed, ssh = _ssh(config, HOST)
    print(f"ssh -F ssh.config to a paused guest: exit {ssh.returncode} after {elapsed:.1f} s\n"
          f"{ssh.stderr}")
    assert ssh.returncode == 255
    assert elapsed < 30

    with QMPClient(paused_tiny) as qmp:
        qmp.execute("cont")
    elapsed, proc = _timed(limactl, "shell", NAME, "true", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30
    assert _ssh(config, HOST)[1].returncode == 0
    assert qemu_pids_for(limactl.home) == qemu  # nothing was killed or restarted


def test_fixed_port_stop_then_apply_is_not_delayed(limactl: Limactl, tmp_path: Path) -> None:
    port = _free_port()
    spec = _tiny(tmp_path, "t", f"ssh:\n  localPort: {port}\n")
    first, proc = _timed(limactl, "apply", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert limactl("shell", "t", "true", timeout=60).returncode == 0
    limactl("stop", "t", timeout=120)
    assert qemu_pids_for(limactl.home) == []
    # What made the port look busy: a connection of the port's that ended in TIME_WAIT,
    # and no listener. qemu leaves one when it closes a forwarded connection first; whether
    # it does depends on who closes first, so the test makes one itself.
    _leave_time_wait(port)
    states = _sockets_on(port)
    assert "06" in states and "0A" not in states, states
    again, proc = _timed(limactl, "apply", str(spec))
    print(f"fixed ssh.localPort {port}: first apply {first:.1f} s, apply after stop "
          f"{again:.1f} s (sockets left on the port: {states})")
    assert proc.returncode == 0, proc.stderr
    assert "t: running" in proc.stdout
    assert again < first + 20  # no wait for TIME_WAIT to expire (60 s)
    assert limactl("shell", "t", "true", timeout=60).returncode == 0


def test_fixed_port_held_by_a_listener_fails_at_once(limactl: Limactl, tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        spec = _tiny(tmp_path, "t", f"ssh:\n  localPort: {port}\n")
        elapsed, proc = _timed(limactl, "apply", str(spec), timeout=120)
    finally:
        holder.close()
    print(f"apply with ssh.localPort {port} held: exit {proc.returncode} after {elapsed:.1f} s"
          f"\n{proc.stderr}")
    assert proc.returncode == 1
    assert elapsed < 15
    assert f"ssh.localPort {port}" in proc.stderr
    assert f"PID {os.getpid()} (" in proc.stderr
    assert "set another ssh.localPort" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert qemu_pids_for(limactl.home) == []
