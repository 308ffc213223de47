"""Reading what a user hands over: stdin stops at the 4 MiB limit instead of filling
memory, and a locator that is a FIFO, a device or a directory is refused at once instead
of blocking. Through `python -m lima.cli` subprocesses, with a memory limit and a timeout
so the old behaviour (3 GB read, MemoryError; a FIFO blocking forever) fails the test.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 1024**3  # the old code reached 3 GB on /dev/zero


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def limactl(args: list[str], stdin: int | None = None, timeout: float = 30,
            umask: int | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    def pre() -> None:
        limit_memory()
        if umask is not None:
            os.umask(umask)

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lima.cli", *args], stdin=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ), preexec_fn=pre)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("verb", [["create", "--name", "default", "-"], ["apply", "-"],
                                  ["start", "--name", "default", "-"]])
def test_endless_stdin_is_refused_at_the_limit(verb: list[str], _isolated_home: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        proc, elapsed = limactl(verb, stdin=zero.fileno())
    assert proc.returncode == 1, proc.stderr
    assert "stdin is larger than the 4 MiB limit" in proc.stderr
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 20
    assert not (_isolated_home / "default").exists()


def test_stdin_just_under_the_limit_is_read(tmp_path: Path, _isolated_home: Path) -> None:
    doc = tmp_path / "doc.yaml"
    body = b"cpus: 1\n"
    doc.write_bytes(body + b"#" * (4 * 1024 * 1024 - len(body) - 1) + b"\n")
    with open(doc, "rb") as fh:
        proc, _ = limactl(["create", "--name", "vm", "-"], stdin=fh.fileno())
    # Read in full: the spec layer then judges it (no images), not the size check.
    assert "larger than" not in proc.stderr, proc.stderr
    assert "images" in proc.stderr


@pytest.mark.parametrize("verb", ["create", "apply", "start", "validate"])
def test_fifo_locator_is_refused_at_once(
    verb: str, tmp_path: Path, _isolated_home: Path
) -> None:
    fifo = tmp_path / "vm.yaml"
    os.mkfifo(fifo)
    proc, elapsed = limactl([verb, str(fifo)], timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert "it is a FIFO (named pipe), not a regular file" in proc.stderr
    assert str(fifo) in proc.stderr
    assert elapsed < 10
    assert not (_isolated_home / "vm").exists()


@pytest.mark.parametrize(("locator", "what"), [
    ("/dev/zero", "a character device"), ("/dev/null", "a character device"),
])
def test_device_locator_is_refused(locator: str, what: str, _isolated_home: Path) -> None:
    proc, elapsed = limactl(["create", "--name", "vm", locator])
    assert proc.returncode == 1
    assert f"cannot read {locator}: it is {what}, not a regular file" in proc.stderr
    assert elapsed < 10


def test_directory_locator_is_refused(tmp_path: Path, _isolated_home: Path) -> None:
    d = tmp_path / "dir.yaml"
    d.mkdir()
    proc, _ = limactl(["create", str(d)])
    assert proc.returncode == 1 and "it is a directory" in proc.stderr


def test_limactl_under_umask_zero_makes_private_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `limactl create` started with umask 0 (a careless service manager): LIMA_HOME,
    `_locks` and the lock and request files are private."""
    home = tmp_path / "n" / "h"  # short: its socket paths must fit in 108 bytes
    spec = tmp_path / "vm.yaml"
    spec.write_text("images:\n- location: /nonexistent/vm.qcow2\n  arch: x86_64\n")
    monkeypatch.setenv("LIMA_HOME", str(home))
    proc, _ = limactl(["create", str(spec)], umask=0)
    assert "no image for arch" in proc.stderr  # failed after taking the lock
    for d in (home.parent, home, home / "_locks"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    for f in ("vm.lock", "vm.request"):
        assert stat.S_IMODE(os.stat(home / "_locks" / f).st_mode) == 0o600, f
