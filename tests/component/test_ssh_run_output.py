"""lima.drivers.ssh.run against an in-process paramiko sshd that sends a command's exit
status before the last of its output, as OpenSSH does when the command ends while its
output is still in the pipe (seen in a loaded guest: the mount check's second line was
lost and a mounted share reported as failed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
import pytest

from lima.drivers import ssh

pytestmark = pytest.mark.component

Script = Callable[[paramiko.Channel], None]


class _Server(paramiko.ServerInterface):
    def __init__(self, script: Script) -> None:
        self.script = script

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self.script, args=(channel,), daemon=True).start()
        return True


@pytest.fixture
def connect() -> Iterator[Callable[[Script], paramiko.SSHClient]]:
    made: list[tuple[socket.socket, paramiko.SSHClient]] = []

    def start(script: Script) -> paramiko.SSHClient:
        key = paramiko.ECDSAKey.generate()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            t = paramiko.Transport(conn)
            t.add_server_key(key)
            t.start_server(server=_Server(script))
            while t.is_active():
                time.sleep(0.05)

        threading.Thread(target=serve, daemon=True).start()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("127.0.0.1", listener.getsockname()[1], username="lima",
                       pkey=paramiko.ECDSAKey.generate(), look_for_keys=False,
                       allow_agent=False, timeout=10)
        made.append((listener, client))
        return client

    yield start
    for listener, client in made:
        client.close()
        listener.close()


def test_output_after_the_exit_status_is_kept(
        connect: Callable[[Script], paramiko.SSHClient]) -> None:
    def script(chan: paramiko.Channel) -> None:
        time.sleep(0.02)
        chan.sendall(b"mount-ok 0\n")
        chan.send_exit_status(0)
        time.sleep(0.3)  # the guest's sshd reads the pipe's rest later
        chan.sendall(b"mount-ok 1\n")
        chan.sendall_stderr(b"late words\n")
        chan.shutdown_write()
        chan.close()

    rc, out, err = ssh.run(connect(script), "check", timeout=10)
    assert (rc, out, err) == (0, "mount-ok 0\nmount-ok 1\n", "late words\n")


def test_a_channel_held_open_ends_after_the_grace(
        connect: Callable[[Script], paramiko.SSHClient],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "EOF_GRACE", 0.5)
    release = threading.Event()

    def script(chan: paramiko.Channel) -> None:
        time.sleep(0.02)
        chan.sendall(b"started\n")
        chan.send_exit_status(3)
        release.wait(20)  # a background child keeps stdout open: no EOF
        chan.close()

    started = time.monotonic()
    try:
        rc, out, _ = ssh.run(connect(script), "daemon &", timeout=10)
    finally:
        release.set()
    assert (rc, out) == (3, "started\n")
    assert time.monotonic() - started < 5  # not the 10 s timeout
