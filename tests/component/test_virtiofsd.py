"""The virtiofsd daemons of a virtiofs instance, real (QEMU's /usr/lib/qemu/virtiofsd), without
a VM: started before "qemu" with their sockets ready, ended by PID when qemu stops, exits
early, or never starts; one that fails to start stops the boot. The unprivileged path
(unshare in a user namespace) runs under setpriv as an unprivileged uid."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lima.drivers import procs, virtiofs
from lima.drivers.hostagent import read_events
from lima.drivers.hostagent.virtiofsd import VirtiofsDaemons, pid_file
from lima.drivers.virtiofs import C_FLAVOR, DaemonCommand, daemon_commands
from lima.errors import LimaError
from lima.schemas.spec import Mount
from tests.component.test_hostagent import (
    SLEEPER,
    FakeGuest,
    Running,
    inst_dir,  # noqa: F401 (a fixture)
    kinds,
    run_agent,  # noqa: F401 (a fixture)
    statuses,
    wait_for,
)
from tests.unit.test_qemu_argv import make_spec

BINARY = virtiofs.find_virtiofsd()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no virtiofsd on this host")
NOBODY = 65534
request_cleanup: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_temp_dirs() -> Iterator[None]:
    yield
    while request_cleanup:
        shutil.rmtree(request_cleanup.pop(), ignore_errors=True)


@pytest.fixture
def shared(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path / "ro", tmp_path / "rw"]
    for d in dirs:
        d.mkdir()
    return dirs


def commands(inst: Path, dirs: list[Path], *, as_root: bool = True,
             prefix: tuple[str, ...] = (), bad: int = -1) -> list[DaemonCommand]:
    """The daemons of `dirs`; number `bad` gets an option virtiofsd refuses at start."""
    mounts = tuple(Mount(location=str(d), mount_point=f"/mnt/{d.name}") for d in dirs)
    assert BINARY is not None
    cmds = daemon_commands(make_spec(mount_type="virtiofs", mounts=mounts), inst,
                           binary=BINARY, flavor=C_FLAVOR, as_root=as_root)
    return [DaemonCommand(c.index, c.socket, c.location,
                          (*prefix, *c.argv, *(("-o", "no_such_option") if c.index == bad
                                               else ()))) for c in cmds]


@pytest.fixture
def daemons() -> Iterator[list[VirtiofsDaemons]]:
    started: list[VirtiofsDaemons] = []
    yield started
    for d in started:
        d.stop()


def gone(pid: int) -> bool:
    return not procs.pid_alive(pid)


def test_started_ready_and_ended_by_pid(tmp_path: Path, shared: list[Path],
                                        daemons: list[VirtiofsDaemons]) -> None:
    cmds = commands(tmp_path, shared)
    vd = VirtiofsDaemons.start(cmds)
    daemons.append(vd)
    assert len(vd.pids) == 2 and all(procs.pid_alive(p) for p in vd.pids)
    for cmd, pid in zip(cmds, vd.pids, strict=True):
        assert Path(cmd.socket).is_socket()
        assert Path(pid_file(cmd)).read_text() == f"{pid}\n"
    # The socket takes a vhost-user connection (what qemu does first).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(cmds[0].socket)
    pids = vd.pids
    vd.stop()
    assert all(gone(p) for p in pids)
    assert not any(Path(c.socket).exists() or Path(pid_file(c)).exists() for c in cmds)
    vd.stop()  # twice is harmless


def test_a_successor_agent_adopts_and_ends_them(tmp_path: Path, shared: list[Path],
                                                daemons: list[VirtiofsDaemons]) -> None:
    """An agent that attaches to the qemu of a dead one ends that one's daemons too."""
    cmds = commands(tmp_path, shared)
    first = VirtiofsDaemons.start(cmds)
    daemons.append(first)
    (tmp_path / "virtiofsd-7.pid").write_text(f"{os.getpid()}\n")  # no virtiofsd: not taken
    second = VirtiofsDaemons.adopt(tmp_path)
    assert sorted(second.pids) == sorted(first.pids)
    assert not (tmp_path / "virtiofsd-7.pid").exists()
    second.stop()
    assert all(gone(p) for p in first.pids)
    assert not list(tmp_path.glob("virtiofsd-*"))


def test_a_failing_daemon_ends_the_others(tmp_path: Path, shared: list[Path]) -> None:
    cmds = commands(tmp_path, shared, bad=1)
    with pytest.raises(LimaError, match=r"virtiofsd for .*/rw exited with status 1: .*"
                                        r"no_such_option"):
        VirtiofsDaemons.start(cmds)
    assert not any(Path(c.socket).exists() or Path(pid_file(c)).exists() for c in cmds)
    assert not [p for p in _virtiofsd_pids() if str(shared[0]) in _cmdline(p)]


def _virtiofsd_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and "virtiofsd" in _cmdline(int(p.name))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# A stand-in qemu that connects to each virtiofsd socket, as qemu does, then sleeps.
FAKE_QEMU = ("import socket, sys, time\n"
             "held = []\n"
             "for path in sys.argv[1:]:\n"
             "    s = socket.socket(socket.AF_UNIX); s.connect(path); held.append(s)\n"
             "time.sleep(1000)\n")


def test_host_agent_starts_them_before_qemu_and_ends_them_after(
        inst_dir: Path, shared: list[Path],  # noqa: F811
        run_agent: Callable[..., Running]) -> None:  # noqa: F811
    cmds = commands(inst_dir, shared)
    argv = [sys.executable, "-c", FAKE_QEMU, *(c.socket for c in cmds)]
    r = run_agent(argv, FakeGuest([]), virtiofsd=cmds)
    wait_for(lambda: "running" in kinds(inst_dir))
    vd = r.agent._virtiofsd
    assert vd is not None
    pids = vd.pids
    assert all(procs.pid_alive(p) for p in pids)
    assert r.stop() == 0
    assert all(gone(p) for p in pids)
    assert not list(inst_dir.glob("virtiofsd-*"))


def test_qemu_exiting_ends_them(inst_dir: Path, shared: list[Path],  # noqa: F811
                                run_agent: Callable[..., Running]) -> None:  # noqa: F811
    cmds = commands(inst_dir, shared)
    argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
    r = run_agent(argv, FakeGuest(None), virtiofsd=cmds)
    r.thread.join(30)
    assert r.rc == 1
    assert any("qemu exited with status 3" in e for s in statuses(inst_dir)
               for e in s["errors"])
    assert not list(inst_dir.glob("virtiofsd-*"))
    assert not [p for p in _virtiofsd_pids() if str(shared[0]) in _cmdline(p)]


def test_qemu_not_starting_ends_them(inst_dir: Path, shared: list[Path],  # noqa: F811
                                     run_agent: Callable[..., Running]) -> None:  # noqa: F811
    cmds = commands(inst_dir, shared)
    r = run_agent([str(inst_dir / "no-such-qemu")], FakeGuest(None), virtiofsd=cmds)
    r.thread.join(30)
    assert r.rc == 1
    assert any("qemu did not start" in e for s in statuses(inst_dir) for e in s["errors"])
    assert not list(inst_dir.glob("virtiofsd-*"))
    assert not [p for p in _virtiofsd_pids() if str(shared[0]) in _cmdline(p)]


def test_a_daemon_that_cannot_start_stops_the_boot(
        inst_dir: Path, shared: list[Path],  # noqa: F811
        run_agent: Callable[..., Running]) -> None:  # noqa: F811
    cmds = commands(inst_dir, shared, bad=0)
    r = run_agent(SLEEPER, FakeGuest(None), virtiofsd=cmds)
    r.thread.join(30)
    assert r.rc == 1 and r.agent._qemu is None  # qemu was never started
    assert kinds(inst_dir) == ["booting", "error", "exiting"]
    [error] = statuses(inst_dir)[1]["errors"]
    assert "virtiofsd for" in error and "exited with status" in error
    assert read_events(inst_dir)[-1]["status"]["exiting"]


# -- unprivileged --------------------------------------------------------------------------
def _as_nobody() -> tuple[str, ...]:
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def _connected_and_alive(vd: VirtiofsDaemons, cmd: DaemonCommand) -> bool:
    """virtiofsd sets up its sandbox once qemu connects: still alive a moment after a
    connection means the sandbox worked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(cmd.socket)
        time.sleep(1.0)
        return procs.pid_alive(vd.pids[0]) and vd.daemons[0].proc.poll() is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="setpriv (run as root) makes the daemon an unprivileged uid")
def test_unprivileged_path_sandboxes_in_a_user_namespace(
        daemons: list[VirtiofsDaemons]) -> None:
    # Not under pytest's tmp_path (private to root): the daemon must reach the directory.
    tmp_path = Path(tempfile.mkdtemp(prefix="vfsd-", dir="/tmp"))
    request_cleanup.append(tmp_path)
    shared_dir = tmp_path / "share"
    shared_dir.mkdir()
    tmp_path.chmod(0o755)
    # Control: QEMU's virtiofsd run plainly as an unprivileged user dies at its sandbox.
    plain = commands(tmp_path, [shared_dir], as_root=True, prefix=_as_nobody())
    vd = VirtiofsDaemons.start(plain)
    daemons.append(vd)
    assert not _connected_and_alive(vd, plain[0])
    assert any("Operation not permitted" in line for line in vd.daemons[0].lines)
    vd.stop()
    # limapy's unprivileged command: unshare --user --map-current-user --keep-caps.
    wrapped = commands(tmp_path, [shared_dir], as_root=False, prefix=_as_nobody())
    assert wrapped[0].argv[4:6] == ("unshare", "--user")
    vd = VirtiofsDaemons.start(wrapped)
    daemons.append(vd)
    assert _connected_and_alive(vd, wrapped[0]), vd.daemons[0].lines
    pid = vd.pids[0]
    vd.stop()
    assert gone(pid)
