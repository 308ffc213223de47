"""9p mounts around a suspend (lima.drivers.suspendmounts) against a fake guest: which mounts
are unmounted, a busy one refusing the suspend with the others mounted again, the words."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from lima.drivers import suspendmounts
from lima.errors import LimaError, TemporaryError
from lima.schemas.spec import Mount

pytestmark = pytest.mark.unit

HOME = Mount(location="/home/u", mount_point="/home/u")
RW = Mount(location="/tmp/lima", mount_point="/tmp/lima", writable=True)
DATA = Mount(location="/srv/d", mount_point="/mnt/my data", writable=True)


class FakeGuest:
    """What the guest has mounted; `busy` mount points refuse umount as util-linux does."""

    def __init__(self, mounted: set[str], busy: set[str] = frozenset(),  # type: ignore[assignment]
                 lost: bool = False) -> None:
        self.mounted = set(mounted)
        self.busy = set(busy)
        self.lost = lost
        self.commands: list[str] = []
        self.remounted: list[str] = []

    def run(self, _client: Any, command: str, *, timeout: float) -> tuple[int, str, str]:
        self.commands.append(command)
        if self.lost:
            raise TemporaryError("ssh connection is closed")
        mp = shlex.split(command.rsplit(";", 1)[1])[-1]
        if mp not in self.mounted:
            return suspendmounts.NOT_MOUNTED, "", ""
        if mp in self.busy:
            return 32, "", f"umount: {mp}: target is busy.\n"
        self.mounted.discard(mp)
        return 0, "", ""

    def mount_virtfs(self, _client: Any, mount_type: str,
                     mounts: list[Mount]) -> list[str | None]:
        assert mount_type == "9p"
        for m in mounts:
            self.remounted.append(m.mount_point)
            self.mounted.add(m.mount_point)
        return [None] * len(mounts)


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> FakeGuest:
    g = FakeGuest({"/home/u", "/tmp/lima", "/mnt/my data"})
    monkeypatch.setattr(suspendmounts, "run", g.run)
    monkeypatch.setattr(suspendmounts, "mount_virtfs", g.mount_virtfs)
    return g


def test_only_9p_mounts_block_a_suspend() -> None:
    assert suspendmounts.suspend_blocking("9p", [HOME, RW]) == [HOME, RW]
    assert suspendmounts.suspend_blocking("reverse-sshfs", [HOME, RW]) == []
    assert suspendmounts.suspend_blocking("virtiofs", [HOME]) == []  # refused by the verb


def test_unmount_command_is_plain_and_quoted() -> None:
    cmd = suspendmounts.unmount_command("/mnt/my data")
    assert cmd.endswith("sudo umount '/mnt/my data'")
    assert "-l" not in shlex.split(cmd.rsplit(";", 1)[1])  # never lazily
    assert f"exit {suspendmounts.NOT_MOUNTED}" in cmd


def test_every_9p_mount_is_unmounted(guest: FakeGuest) -> None:
    done = suspendmounts.unmount_for_suspend(object(), "9p", [HOME, RW, DATA])  # type: ignore[arg-type]
    assert done == [HOME, RW, DATA]
    assert guest.mounted == set()
    assert guest.remounted == []


def test_a_mount_that_was_not_mounted_is_skipped_and_not_mounted_later(
        guest: FakeGuest) -> None:
    guest.mounted.discard("/tmp/lima")
    done = suspendmounts.unmount_for_suspend(object(), "9p", [HOME, RW])  # type: ignore[arg-type]
    assert done == [HOME]


def test_a_busy_mount_refuses_and_the_others_come_back(guest: FakeGuest) -> None:
    guest.busy = {"/mnt/my data"}
    with pytest.raises(LimaError) as err:
        suspendmounts.unmount_for_suspend(object(), "9p", [HOME, RW, DATA])  # type: ignore[arg-type]
    msg = str(err.value)
    assert "the 9p mount /mnt/my data is in use in the guest" in msg
    assert "(umount: /mnt/my data: target is busy.)" in msg
    assert suspendmounts.REFUSED in msg
    assert guest.remounted == ["/home/u", "/tmp/lima"]
    assert guest.mounted == {"/home/u", "/tmp/lima", "/mnt/my data"}  # as it was


def test_a_lost_session_is_no_refusal(guest: FakeGuest) -> None:
    guest.lost = True
    with pytest.raises(LimaError) as err:
        suspendmounts.unmount_for_suspend(object(), "9p", [HOME])  # type: ignore[arg-type]
    assert suspendmounts.REFUSED not in str(err.value)  # retried, not refused
    assert "could not unmount /home/u" in str(err.value)


def test_refusal_words() -> None:
    other = suspendmounts.refusal("/m", "sudo: a password is required\n")
    assert other.startswith("the 9p mount /m could not be unmounted in the guest (sudo:")
    assert suspendmounts.REFUSED in other
    busy = suspendmounts.refusal("/m", "umount: can't unmount /m: Device or resource busy")
    assert "is in use in the guest" in busy and "then suspend again" in busy


def test_remount_reports_each_mount_that_did_not_come_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def mount(_client: Any, mount_type: str, mounts: list[Mount]) -> list[str | None]:
        return [("mount: /tmp/lima: special device lima-x does not exist" if m is RW else None)
                for m in mounts]

    monkeypatch.setattr(suspendmounts, "mount_virtfs", mount)
    errors = suspendmounts.remount(object(), "9p", [HOME, RW])  # type: ignore[arg-type]
    assert errors == ["mount /tmp/lima on /tmp/lima (9p) failed: mount: /tmp/lima: special "
                      "device lima-x does not exist"]


def test_the_host_agents_guest_waits_for_its_mounts_before_unmounting() -> None:
    """Before readiness has mounted them, a suspend would race it: retried, not refused;
    a spec without 9p mounts has nothing to prepare."""
    from lima.commands.hostagent import _LazyGuest
    from tests.unit.test_qemu_argv import make_spec

    nine = _LazyGuest("i", 2222, "u", "iid", 60.0, make_spec(mounts=(RW,), mount_type="9p"))
    with pytest.raises(TemporaryError, match="not set up yet"):
        nine.prepare_suspend()
    assert nine.suspend_failed() == []  # nothing was unmounted
    sshfs = _LazyGuest("i", 2222, "u", "iid", 60.0, make_spec(mounts=(RW,)))
    sshfs.prepare_suspend()  # returns at once: no ssh login, nothing to do
