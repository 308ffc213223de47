"""`limactl delete` removes only what an instance directory is known to hold, and what
killed creates and deletes left behind is removed by the next holder of the lock, but only
once their maker is dead.

Through the real CLI entry point in-process, plus real processes killed with SIGKILL in
the middle of `store.create_instance` and `store.delete_instance_dir`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima.controller.lock import instance_lock
from lima.drivers import store
from tests.component import cli


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # only what this command prints
    return cli.run_cli(args, capsys)


def make_instance(home: Path, name: str = "vm", extra: tuple[str, ...] = ()) -> Path:
    """An instance directory as create and a boot leave it (no process running)."""
    d = home / name
    d.mkdir(mode=0o700)
    (d / "lima.yaml").write_text("images: []\n")
    for entry in ("lima-version", "basedisk", "diffdisk", "cidata.iso", "cidata.json",
                  "status.json", "serial.log", "qemu.stderr.log", "ha.stderr.log",
                  "ha.qemu-argv.json", "ssh.config", "qemu.pid", ".status.abcd1234.tmp",
                  *extra):
        (d / entry).write_bytes(b"x")
    return d


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(root.rglob("*"))}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_delete_removes_every_known_entry(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_instance(_isolated_home)
    code, out, err = run_cli(["delete", "vm"], capsys)
    assert code == 0, err
    assert "Deleted 'vm'" in out
    assert sorted(p.name for p in _isolated_home.iterdir()) == ["_locks"]


def test_directory_without_lima_yaml_is_left_alone(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _isolated_home / "data"
    d.mkdir()
    (d / "diffdisk").write_bytes(b"a user's disk")
    (d / "notes").write_text("mine")
    before = tree(_isolated_home)
    for args in (["delete", "data"], ["delete", "-f", "data"]):
        code, _, err = run_cli(args, capsys)
        assert code == 1
        assert "has no lima.yaml" in err and "may hold a user's disk" in err
        assert "nothing was deleted" in err and "Traceback" not in err
        assert tree(_isolated_home) == before


def test_symlinked_instance_dir_is_not_followed(
    _isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = make_instance(tmp_path, "elsewhere")
    (_isolated_home / "vm").symlink_to(elsewhere)
    before = tree(elsewhere)
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1 and "is a symbolic link" in err
    assert tree(elsewhere) == before and (_isolated_home / "vm").is_symlink()


def test_unknown_entries_are_kept_with_their_directory(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_instance(_isolated_home, extra=("my-disk.img",))
    (d / "photos").mkdir()
    (d / "photos" / "cat.jpg").write_bytes(b"meow")
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1
    assert "kept: it holds entries limactl did not create: my-disk.img, photos/" in err
    assert str(d) in err
    # Under its own name, with only the user's entries.
    assert tree(d) == {"my-disk.img": b"x", "photos": b"<dir>", "photos/cat.jpg": b"meow"}
    assert not any(p.name.startswith(".deleting") for p in _isolated_home.iterdir())


def _bind_socket(path: Path) -> None:
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the socket file stays after close, as a killed agent leaves it


def test_the_sock_directory_of_socket_forwards_is_ours(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sock/ (relative hostSocket paths) holding only sockets is removed with the rest."""
    d = make_instance(_isolated_home)
    (d / "sock").mkdir()
    _bind_socket(d / "sock" / "pf.sock")
    assert store.unknown_entries(d) == []
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 0, err
    assert not d.exists()


def test_a_sock_directory_with_a_users_file_is_kept(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_instance(_isolated_home)
    (d / "sock").mkdir()
    _bind_socket(d / "sock" / "pf.sock")
    (d / "sock" / "notes.txt").write_text("mine")
    assert store.unknown_entries(d) == ["sock/"]
    code, _, err = run_cli(["delete", "vm"], capsys)
    assert code == 1
    assert "limactl did not create: sock/" in err
    assert (d / "sock" / "notes.txt").read_text() == "mine"
    assert (d / "sock" / "pf.sock").is_socket()  # nothing in it was removed


def test_delete_of_a_bad_name_among_good_ones_deletes_none(
    _isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_instance(_isolated_home, "a")
    code, _, err = run_cli(["delete", "a", "../x"], capsys)
    assert code == 1 and "invalid instance name '../x'" in err
    assert (_isolated_home / "a" / "lima.yaml").is_file()


# --- leftovers of killed commands --------------------------------------------------------

HOLD_CREATE = textwrap.dedent("""
    import sys, time
    from lima.drivers import store
    def prepare(tmp):
        (tmp / "basedisk").write_bytes(b"\\0" * 65536)
        print(tmp, flush=True)
        time.sleep(600)
    store.create_instance(sys.argv[1], "images: []\\n", prepare)
""")


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def start_create(name: str, children: list[subprocess.Popen[str]]) -> tuple[Path, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_CREATE, name], text=True,
                            stdout=subprocess.PIPE, env=dict(os.environ))
    children.append(proc)
    assert proc.stdout is not None
    work = Path(proc.stdout.readline().strip())
    assert work.is_dir() and work.name.startswith(f".creating-{name}@{proc.pid}-")
    return work, proc.pid


def test_killed_create_is_cleaned_by_the_next_lock_holder(
    _isolated_home: Path, children: list[subprocess.Popen[str]]
) -> None:
    dead_work, _ = start_create("vm", children)
    os.kill(children[0].pid, signal.SIGKILL)
    children[0].wait(timeout=10)
    live_work, _ = start_create("vm", children)  # another create of it, still at work
    other_work, _ = start_create("other", children)
    os.kill(children[2].pid, signal.SIGKILL)
    children[2].wait(timeout=10)
    assert dead_work.is_dir()  # nothing removes it on its own (the bug)

    with instance_lock("vm", wait=False):
        pass
    assert not dead_work.exists()
    assert (live_work / "basedisk").is_file()  # a live create's work is never touched
    assert other_work.is_dir()  # another instance's leftovers wait for its own lock
    with instance_lock("other", wait=False):
        pass
    assert not other_work.exists()


def test_killed_create_is_cleaned_by_the_next_create(
    _isolated_home: Path, tmp_path: Path, children: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    work, _ = start_create("vm", children)
    os.kill(children[0].pid, signal.SIGKILL)
    children[0].wait(timeout=10)
    spec = tmp_path / "vm.yaml"
    spec.write_text("images:\n- location: /nonexistent/vm.qcow2\n  arch: x86_64\n")
    code, _, err = run_cli(["create", str(spec)], capsys)
    assert code == 1 and "no image for arch" in err  # it failed after taking the lock
    assert not work.exists()


HOLD_DELETE = textwrap.dedent("""
    import os, sys, time
    from lima.drivers import store
    real_unlink = os.unlink
    def slow_unlink(path, *a, dir_fd=None):
        real_unlink(path, *a, dir_fd=dir_fd)
        print("unlinked", path, flush=True)
        time.sleep(600)
    os.unlink = slow_unlink
    store.delete_instance_dir(store.require_instance(sys.argv[1]))
""")


def test_killed_delete_is_finished_by_the_next_lock_holder(
    _isolated_home: Path, children: list[subprocess.Popen[str]]
) -> None:
    make_instance(_isolated_home)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_DELETE, "vm"], text=True,
                            stdout=subprocess.PIPE, env=dict(os.environ))
    children.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().startswith("unlinked")
    proc.kill()
    proc.wait(timeout=10)
    left = [p for p in _isolated_home.iterdir() if p.name.startswith(".deleting-vm@")]
    assert len(left) == 1 and left[0].name.startswith(f".deleting-vm@{proc.pid}-")
    with instance_lock("vm", wait=False):
        pass
    assert sorted(p.name for p in _isolated_home.iterdir()) == ["_locks"]


def test_killed_delete_with_a_users_file_is_put_back(_isolated_home: Path) -> None:
    work = _isolated_home / f".deleting-vm@{dead_pid()}-abcd"
    work.mkdir()
    (work / "diffdisk").write_bytes(b"x")
    (work / "mine.txt").write_text("keep me")
    with instance_lock("vm", wait=False):
        pass
    assert tree(_isolated_home / "vm") == {"mine.txt": b"keep me"}
    assert not work.exists()


def test_stale_temps_in_the_instance_dir(_isolated_home: Path) -> None:
    d = make_instance(_isolated_home)
    gone = [".status.abcd1234.tmp", f".lima.yaml.{dead_pid()}.x1y2",
            f".ssh.config.tmp.{dead_pid()}"]
    kept = [f".lima.yaml.{os.getpid()}.q9w8", "notes.txt", ".cidata.iso.tmp"]
    for name in gone + kept:
        (d / name).write_bytes(b"t")
    with instance_lock("vm", wait=False):
        pass
    left = {p.name for p in d.iterdir()}
    assert not left & set(gone)
    assert set(kept) <= left


def test_create_work_dir_names_carry_the_pid(_isolated_home: Path) -> None:
    seen: list[str] = []
    store.create_instance("vm", "images: []\n", lambda tmp: seen.append(tmp.name))
    assert seen[0].startswith(f".creating-vm@{os.getpid()}-")


def test_prune_removes_leftovers_of_names_never_used_again(
    _isolated_home: Path, children: list[subprocess.Popen[str]]
) -> None:
    """A create that failed for good leaves a name nobody locks again: prune cleans it."""
    from lima.commands.prune import remove_leftovers

    dead = _isolated_home / f".creating-gone@{dead_pid()}-abcd"
    dead.mkdir()
    (dead / "basedisk").write_bytes(b"\0" * 4096)
    live_work, _ = start_create("busy", children)
    remove_leftovers()
    assert not dead.exists()
    assert (live_work / "basedisk").is_file()
