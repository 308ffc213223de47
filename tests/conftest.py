"""Test tiers by folder: tests/unit -> unit, tests/component -> component,
tests/integration -> integration. `pytest -m "not integration"` skips the VMs.

The whole session runs with LIMAPY_CHECK_PROGRAMS=1 (see lima.hostprograms): every
program limapy starts, here or in the limactl and host-agent processes the tests start
(they inherit the environment), must be in the host programs table; misses are collected
in LIMAPY_PROGRAMS_LOG and fail the session at its end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lima import hostprograms

ROOT = Path(__file__).parent
# Unit tests are pure and take milliseconds; one that hangs should say so quickly rather
# than after pyproject's 900 s meant for integration tests.
UNIT_TIMEOUT = 20
# What starts a process: Popen (subprocess.run and the runner sit on it), exec and fork.
_PROCESS_STARTERS = ("execv", "execve", "execvp", "execvpe", "execl", "execlp", "fork",
                     "forkpty", "system", "posix_spawn", "posix_spawnp")
_PROGRAMS_LOG = pytest.StashKey[Path]()
_UNLISTED = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "processes: a unit test that may start real processes (it says why)")
    inherited = os.environ.get(hostprograms.LOG_ENV)
    if hasattr(config, "workerinput") and inherited:
        # A pytest-xdist worker: its misses go to the controller's log (the worker got it
        # in its environment), which the controller reads at the end of its session.
        os.environ[hostprograms.CHECK_ENV] = "1"
        return
    # A log per session: several sessions may run on one machine at once.
    fd, name = tempfile.mkstemp(prefix="limapy-programs-", suffix=".log")
    os.close(fd)
    os.environ[hostprograms.CHECK_ENV] = "1"
    os.environ[hostprograms.LOG_ENV] = name
    config.stash[_PROGRAMS_LOG] = Path(name)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log = session.config.stash.get(_PROGRAMS_LOG, None)
    lines = log.read_text().splitlines() if log and log.exists() else []
    session.config.stash[_UNLISTED] = lines
    if lines:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_UNLISTED, [])
    if lines:
        terminalreporter.section("programs missing from lima.hostprograms", red=True)
        for line in lines:
            terminalreporter.line(line, red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_PROGRAMS_LOG, None)
    if log is not None:
        log.unlink(missing_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(ROOT)
        tier = rel.parts[0] if rel.parts else ""
        if tier in ("unit", "component", "integration"):
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "unit" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own LIMA_HOME; nothing touches the user's ~/.lima. It is short
    (unix socket paths in it are limited to 108 bytes) and removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="lh-", dir="/tmp"))
    monkeypatch.setenv("LIMA_HOME", str(home))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_processes_in_unit_tests(request: pytest.FixtureRequest,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test starts no process (CONVENTIONS: unit tests are pure), unless it is
    marked `processes`. Popen's fork is refused rather than Popen itself, so no alias
    (lima.drivers.runner re-exports Popen) slips through."""
    node = request.node
    if node.get_closest_marker("unit") is None or node.get_closest_marker("processes"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"{node.nodeid} started a process; unit tests must not "
            "(mark it @pytest.mark.processes if it has to, or make it a component test)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    for name in _PROCESS_STARTERS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
