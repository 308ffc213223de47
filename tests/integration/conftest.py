"""Integration helpers: drive the real `limactl` CLI in a subprocess against a private
LIMA_HOME, and always end every qemu and host agent that LIMA_HOME started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Limactl:
    home: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "LIMA_HOME": str(self.home)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "lima.cli", *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout, input=input,
            cwd=REPO,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"limactl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "lima.cli", *args], env=self.env(), cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


def _pid_from(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_leftovers(home: Path) -> list[str]:
    """SIGKILL every qemu / host agent whose pid file lives under `home`; return what was
    killed. The cmdline check makes sure a recycled PID is never hit."""
    killed: list[str] = []
    if not home.is_dir():
        return killed
    pids: list[int] = []
    for inst in home.iterdir():
        virtiofsd = [(p.name, "virtiofsd") for p in sorted(inst.glob("virtiofsd-*.pid"))]
        for pidfile, needle in (("ha.pid", "hostagent"), ("qemu.pid", "qemu-system"),
                                *virtiofsd):
            pid = _pid_from(inst / pidfile)
            if pid and needle in _cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(f"{inst.name}/{pidfile}={pid}")
                    pids.append(pid)
                except ProcessLookupError:
                    pass
    # Wait (briefly) for what was killed to be gone, rather than a fixed pause after
    # every test: most tests leave nothing behind.
    deadline = time.monotonic() + 2.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


def _alive(pid: int) -> bool:
    """False once the process is gone or a zombie (SIGKILLed, not yet reaped by its
    parent: it holds no files or sockets any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def qemu_pids_for(home: Path) -> list[int]:
    """Every live qemu whose command line mentions this LIMA_HOME."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            cmd = _cmdline(int(p.name))
            if "qemu-system" in cmd and str(home) in cmd:
                pids.append(int(p.name))
    return pids


@contextlib.contextmanager
def private_home() -> Iterator[Limactl]:
    """A LIMA_HOME of its own for a module- or session-scoped fixture (a shared instance):
    short (unix socket paths), and every qemu / host agent in it ended on the way out."""
    home = Path(tempfile.mkdtemp(prefix="lh-", dir="/tmp"))
    try:
        yield Limactl(home)
    finally:
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _boot_templates() -> Iterator[Path]:
    """Boot templates (lima.drivers.boottemplate) of this run only, not the user's cache:
    the first Debian first boot of each machine saves one, later ones load it."""
    from lima.drivers.boottemplate import ENV_DIR

    old = os.environ.get(ENV_DIR)
    path = Path(tempfile.mkdtemp(prefix="limapy-boot-templates-", dir="/tmp"))
    os.environ[ENV_DIR] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop(ENV_DIR, None)
        else:
            os.environ[ENV_DIR] = old
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """As the root conftest's, plus: every qemu / host agent started under it is ended."""
    home = Path(tempfile.mkdtemp(prefix="lh-", dir="/tmp"))
    monkeypatch.setenv("LIMA_HOME", str(home))
    try:
        yield home
    finally:
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def limactl(_isolated_home: Path) -> Iterator[Limactl]:
    lc = Limactl(_isolated_home)
    try:
        yield lc
    finally:
        kill_leftovers(_isolated_home)
