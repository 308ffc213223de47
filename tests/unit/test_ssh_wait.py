"""ssh.wait_ssh's retry policy: one banner wait, then logins only, slower guests get longer."""

from __future__ import annotations

import time
from pathlib import Path

import paramiko
import pytest

from lima.drivers import ssh
from lima.errors import TemporaryError

pytestmark = pytest.mark.unit


def test_banner_once_then_logins_with_growing_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    banners: list[float] = []
    timeouts: list[float] = []
    socks: list[object] = []
    clock = [1000.0]

    probe = object()

    def fake_banner(port: int, *, deadline: float, interval: float = 0.25) -> object:
        banners.append(deadline)
        return probe

    def fake_connect(port: int, user: str, key: Path, *, timeout: float,
                     sock: object = None) -> paramiko.SSHClient:
        timeouts.append(timeout)
        socks.append(sock)
        if len(timeouts) < 4:
            clock[0] += timeout  # the attempt used its whole time: a slow guest
            raise TemporaryError("timed out")
        return paramiko.SSHClient()

    monkeypatch.setattr(ssh, "banner_socket", fake_banner)
    monkeypatch.setattr(ssh, "connect", fake_connect)
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    client = ssh.wait_ssh(2222, "u", Path("/k"), deadline=clock[0] + 500)
    assert isinstance(client, paramiko.SSHClient)
    assert len(banners) == 1
    assert timeouts == [10.0, 20.0, 40.0, 60.0]
    # The first login goes over the probe's connection; the retries open their own.
    assert socks == [probe, None, None, None]


def test_refused_logins_keep_the_first_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts: list[float] = []

    def fake_connect(port: int, user: str, key: Path, *, timeout: float,
                     sock: object = None) -> paramiko.SSHClient:
        timeouts.append(timeout)
        if len(timeouts) < 3:
            raise TemporaryError("refused")  # at once: sshd restarting, key not there yet
        return paramiko.SSHClient()

    monkeypatch.setattr(ssh, "banner_socket", lambda port, *, deadline, interval=0.25: None)
    monkeypatch.setattr(ssh, "connect", fake_connect)
    ssh.wait_ssh(2222, "u", Path("/k"), deadline=time.monotonic() + 30)
    assert timeouts == [10.0, 10.0, 10.0]
