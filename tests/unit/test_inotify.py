"""mountInotify's pure parts (lima.drivers.hostagent.inotify): which mounts are watched, the
guest's name of a host path, the lines sent, the coalescing and the echo filter; and the
guest loop itself, run by the host's busybox sh and dash on a scratch directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lima.drivers.hostagent.inotify import (
    GUEST_LOOP,
    Coalescer,
    batch,
    guest_path,
    watched,
)
from lima.schemas.spec import Mount


def test_only_writable_mounts_are_watched_by_their_real_path(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    mounts = (Mount(location=str(tmp_path / "link"), mount_point="/mnt/w", writable=True),
              Mount(location="/ro", mount_point="/ro"))
    assert watched(mounts) == [(str(real), "/mnt/w")]


def test_guest_path_takes_the_longest_matching_mount() -> None:
    table = [("/h", "/g"), ("/h/deep", "/other"), ("/x/", "/y")]
    assert guest_path("/h/a/b.txt", table) == "/g/a/b.txt"
    assert guest_path("/h/deep/c", table) == "/other/c"
    assert guest_path("/h", table) == "/g"
    assert guest_path("/x/f", table) == "/y/f"
    assert guest_path("/hx/f", table) is None  # a sibling whose name starts the same
    assert guest_path("/elsewhere", table) is None


def test_batch_lines_keep_nanoseconds_and_skip_newlines() -> None:
    data = batch([("/g/a b.txt", 1_700_000_000_000_000_123), ("/g/bad\nname", 5)])
    assert data == b"1700000000.000000123 /g/a b.txt\n"


def test_coalescing_and_the_echo_filter() -> None:
    c = Coalescer()
    c.add("/g/a", 1_000_000_000)
    c.add("/g/a", 2_000_000_000)  # the newest time of a path wins
    c.add("/g/b", 3_000_000_000)
    assert sorted(c.take()) == [("/g/a", 2_000_000_000), ("/g/b", 3_000_000_000)]
    assert c.take() == []
    c.add("/g/a", 2_000_000_000)  # the host seeing our own touch: dropped
    c.add("/g/b", 2_500_000_000)  # older than what was sent (truncated): dropped
    c.add("/g/a", 2_005_000_000)  # within Lima's 10 ms: dropped
    assert c.take() == []
    c.add("/g/a", 2_020_000_000)  # a real change later on
    assert c.take() == [("/g/a", 2_020_000_000)]


@pytest.mark.processes
@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_guest_loop_sets_times_or_touches_the_mode(tmp_path: Path, shell: str) -> None:
    """coreutils touch takes the exact time; busybox's cannot, and the mode is set to itself
    (an attribute change that keeps the times)."""
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    f = tmp_path / "a file"
    f.write_text("x")
    os.chmod(f, 0o640)
    os.utime(f, ns=(1, 2))
    before = f.stat()
    argv = [shell, "-c", GUEST_LOOP] if shell == "dash" else ["busybox", "sh", "-c", GUEST_LOOP]
    env = {**os.environ}
    if shell == "busybox":
        # The guest's touch and stat are busybox applets: put them first on PATH.
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for applet in ("touch", "stat", "chmod"):
            (bindir / applet).symlink_to(shutil.which("busybox") or "busybox")
        env["PATH"] = f"{bindir}:{env['PATH']}"
    lines = batch([(str(f), 1_700_000_000_123_456_789), (str(tmp_path / "gone"), 1)])
    subprocess.run(argv, input=lines, env=env, check=True, timeout=30)
    after = f.stat()
    assert after.st_mode == before.st_mode
    if shell == "dash":  # coreutils: Lima's semantics, both times set to the host's mtime
        assert (after.st_atime_ns, after.st_mtime_ns) == (1_700_000_000_123_456_789,) * 2
    else:
        assert (after.st_atime_ns, after.st_mtime_ns) == (1, 2)
        assert after.st_ctime_ns > before.st_ctime_ns
    assert not (tmp_path / "gone").exists()  # touch -c creates nothing
