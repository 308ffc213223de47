"""The lock and request files in a LIMA_HOME others may write to: planted symlinks, hard
links and FIFOs are refused without touching their targets, and everything limactl makes
there is private whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.controller.lock import (
    instance_lock,
    lock_path,
    read_request,
    request_path,
    superseded_by,
    write_request,
)
from lima.drivers import safefs
from lima.drivers.identity import ensure_identity
from lima.drivers.store import create_instance
from lima.errors import LimaError, SpecError


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_bytes(b"precious\n")
    os.chmod(v, 0o644)
    return v


def fingerprint(p: Path) -> tuple[bytes, int, int]:
    st = os.stat(p)
    return p.read_bytes(), st.st_mode, st.st_mtime_ns


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_symlink_at_the_lock_path_is_refused(_isolated_home: Path, victim: Path) -> None:
    before = fingerprint(victim)
    lock_path("vm").parent.mkdir(mode=0o700)
    lock_path("vm").symlink_to(victim)
    with pytest.raises(LimaError, match=r"vm\.lock: it is a symbolic link"), \
            instance_lock("vm", wait=False):
        pass
    assert fingerprint(victim) == before


def test_hard_link_at_the_lock_path_is_refused(_isolated_home: Path, victim: Path) -> None:
    before = fingerprint(victim)
    lock_path("vm").parent.mkdir(mode=0o700)
    os.link(victim, lock_path("vm"))
    with pytest.raises(LimaError, match="2 hard links"), instance_lock("vm", wait=False):
        pass
    assert fingerprint(victim) == before


def test_fifo_at_the_lock_path_is_refused_at_once(_isolated_home: Path) -> None:
    lock_path("vm").parent.mkdir(mode=0o700)
    os.mkfifo(lock_path("vm"))
    done = threading.Event()
    errors: list[str] = []

    def take() -> None:
        try:
            with instance_lock("vm", wait=False):
                pass
        except LimaError as exc:
            errors.append(str(exc))
        done.set()

    threading.Thread(target=take, daemon=True).start()
    assert done.wait(5), "opening a FIFO at the lock path blocked"
    assert errors and "not a regular file" in errors[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant another user's file")
def test_lock_file_owned_by_someone_else_is_refused(_isolated_home: Path) -> None:
    lock_path("vm").parent.mkdir(mode=0o700)
    lock_path("vm").write_bytes(b"")
    os.chown(lock_path("vm"), 65534, 65534)
    with pytest.raises(LimaError, match="owned by uid 65534"), instance_lock("vm", wait=False):
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant another user's directory")
def test_locks_dir_owned_by_someone_else_is_refused(_isolated_home: Path) -> None:
    lock_path("vm").parent.mkdir(mode=0o777)
    os.chown(lock_path("vm").parent, 65534, 65534)
    with pytest.raises(LimaError, match="owned by uid 65534"), instance_lock("vm", wait=False):
        pass
    assert not lock_path("vm").exists()


def test_lock_of_an_older_version_is_made_private(_isolated_home: Path) -> None:
    lock_path("vm").parent.mkdir(mode=0o755)
    lock_path("vm").write_bytes(b"")
    os.chmod(lock_path("vm"), 0o644)
    with instance_lock("vm", wait=False):
        pass
    assert mode(lock_path("vm")) == 0o600


def test_lock_path_refuses_odd_names(_isolated_home: Path) -> None:
    for name in ("../../etc/x", "/tmp/x", ".", ""):
        with pytest.raises(SpecError, match="instance name"):
            lock_path(name)
    assert not (_isolated_home / "_locks").exists()


def test_everything_made_is_private_under_umask_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_zero: None
) -> None:
    home = tmp_path / "d" / "h"  # LIMA_HOME and a parent that do not exist yet (short:
    # socket paths under it must fit in 108 bytes, also under pytest-xdist)
    monkeypatch.setenv("LIMA_HOME", str(home))
    with instance_lock("vm", wait=False):
        write_request("vm", "running", "limactl apply")
        create_instance("vm", "images: []\n")
    ensure_identity()
    for d in (home.parent, home, home / "_locks", home / "_config", home / "vm"):
        assert mode(d) == 0o700, d
    for f in (lock_path("vm"), request_path("vm")):
        assert mode(f) == 0o600, f


def test_request_round_trip_and_supersede_rules(_isolated_home: Path) -> None:
    mine = write_request("vm", "running", "limactl apply")
    assert read_request("vm") == mine
    assert superseded_by("vm", mine) is None
    # Another process asks for "running" too: it queues behind the lock, no interruption.
    other = {"runState": "running", "pid": mine.pid + 1, "command": "limactl apply",
             "time": mine.time + 1}
    safefs.write_private_file(request_path("vm"), json.dumps(other).encode())
    assert superseded_by("vm", mine) is None
    other.update(runState="stopped", command="limactl stop -f")
    safefs.write_private_file(request_path("vm"), json.dumps(other).encode())
    newer = superseded_by("vm", mine)
    assert newer is not None and newer.command == "limactl stop -f"
    assert newer.pid == mine.pid + 1
    # A request older than mine (a finished `delete -f` before a create of the same name)
    # interrupts nobody.
    other.update(runState="absent", command="limactl delete -f", time=mine.time - 1)
    safefs.write_private_file(request_path("vm"), json.dumps(other).encode())
    assert superseded_by("vm", mine) is None
    # A garbled request interrupts nobody.
    request_path("vm").write_text("{not json")
    assert superseded_by("vm", mine) is None


def test_request_written_over_a_planted_symlink_leaves_the_target(
    _isolated_home: Path, victim: Path
) -> None:
    before = fingerprint(victim)
    request_path("vm").parent.mkdir(mode=0o700)
    request_path("vm").symlink_to(victim)
    assert read_request("vm") is None  # not followed when read either
    req = write_request("vm", "stopped", "limactl stop")
    assert fingerprint(victim) == before
    assert not request_path("vm").is_symlink()
    assert read_request("vm") == req
