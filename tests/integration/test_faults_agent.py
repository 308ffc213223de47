"""Faults around the host agent, on the tiny guest through the real CLI: a healthy guest is
never rebooted or killed because its agent died, its event log was garbled, its agent got
stuck, or the guest stopped answering for a while (its clock is then set again); and every
command returns in time.

One tiny instance `t` serves the whole module (a boot each would cost more than the
checks): the tests run in file order, each leaves it running; the freeze comes first (with
the agent that booted the guest, as a user's would be) and the stuck-agent stop last. Each
test first makes sure it got a running instance (an earlier failure is repaired with an
apply and said so), so one failure does not fail the ones after it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lima.drivers.qmp import QMPClient
from tests.integration.conftest import REPO, Limactl, private_home, qemu_pids_for

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "tiny.yaml"


@dataclass
class Shared:
    limactl: Limactl
    yaml: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """The module's tiny instance `t`, booted once; every test's failure to boot it shows
    this fixture's error."""
    f = tmp_path_factory.mktemp("faults-agent") / "t.yaml"
    shutil.copy(EXAMPLE, f)
    with private_home() as limactl:
        limactl("apply", str(f), timeout=300)
        yield Shared(limactl, f)


@pytest.fixture
def limactl(shared: Shared) -> Limactl:
    return shared.limactl


@pytest.fixture
def running(shared: Shared) -> Path:
    """The shared instance, running; returns its lima.yaml. One an earlier test left in
    another state is brought back by an apply first (and the test says so)."""
    status = _record(shared.limactl).get("status")
    if status != "Running":
        print(f"the shared instance was {status}: applying it again")
        shared.limactl("apply", str(shared.yaml), timeout=300)
    return shared.yaml


def _pid(home: Path, name: str) -> int:
    return int((home / "t" / name).read_text().strip())


def _boot_id(limactl: Limactl) -> str:
    return limactl("shell", "t", "cat", "/proc/sys/kernel/random/boot_id",
                   timeout=60).stdout.strip()


def _record(limactl: Limactl) -> dict[str, object]:
    rec: dict[str, object] = json.loads(limactl("list", "--format", "json", "t").stdout)
    return rec


def _condition(rec: dict[str, object], kind: str) -> dict[str, str]:
    conds = rec.get("conditions")
    assert isinstance(conds, list)
    found = [c for c in conds if c.get("type") == kind]
    assert found, conds
    cond: dict[str, str] = found[0]
    return cond


def _timed(limactl: Limactl, *args: str, timeout: float = 300) -> tuple[float, object]:
    start = time.monotonic()
    proc = limactl(*args, check=False, timeout=timeout)
    return time.monotonic() - start, proc


def test_guest_that_stops_answering_is_not_ready_and_not_killed(
    limactl: Limactl, running: Path
) -> None:
    qemu = _pid(limactl.home, "qemu.pid")
    qmp_sock = limactl.home / "t" / "qmp.sock"
    agent_log = limactl.home / "t" / "ha.stderr.log"
    logged_before = agent_log.stat().st_size  # the shared agent's log: only what follows
    with QMPClient(qmp_sock) as qmp:
        qmp.execute("stop")  # the guest freezes; qemu and its user networking do not
    try:
        deadline = time.monotonic() + 90
        while _condition(_record(limactl), "Ready")["status"] == "True":
            assert time.monotonic() < deadline, "a frozen guest still counts as Ready"
            time.sleep(1)
        elapsed, proc = _timed(limactl, "apply", str(running))
        assert proc.returncode == 1
        assert "does not answer" in proc.stderr  # type: ignore[attr-defined]
        assert elapsed < 15
        assert qemu_pids_for(limactl.home) == [qemu]  # left as it was
    finally:
        with QMPClient(qmp_sock) as qmp:
            qmp.execute("cont")
    deadline = time.monotonic() + 90
    while True:
        proc = limactl("apply", str(running), check=False, timeout=120)
        if proc.returncode == 0:
            break
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.5)
    assert _condition(_record(limactl), "Ready")["status"] == "True"
    assert qemu_pids_for(limactl.home) == [qemu]
    # The guest's clock stood still while it was frozen; the heartbeat set it again.
    deadline = time.monotonic() + 30
    while True:
        skew = int(limactl("shell", "t", "date", "-u", "+%s", timeout=60).stdout) - time.time()
        if abs(skew) <= 4:
            break
        assert time.monotonic() < deadline, f"the guest clock is {skew:+.0f} s off"
        time.sleep(0.5)
    # The agent logs it once its `date -s` returned, which may be just after the guest's
    # clock is seen right: a few seconds' grace.
    deadline = time.monotonic() + 10
    while True:
        with agent_log.open("rb") as f:
            f.seek(logged_before)
            logged = f.read()
        if b"guest clock was" in logged or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b"guest clock was" in logged, logged


def test_lost_host_agent_is_replaced_without_a_reboot(limactl: Limactl, running: Path) -> None:
    qemu, boot = _pid(limactl.home, "qemu.pid"), _boot_id(limactl)
    os.kill(_pid(limactl.home, "ha.pid"), signal.SIGKILL)
    time.sleep(0.5)
    assert _record(limactl)["status"] == "Broken"  # the truth: qemu without its keeper
    elapsed, proc = _timed(limactl, "apply", str(running))
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]
    assert elapsed < 60
    assert _pid(limactl.home, "qemu.pid") == qemu
    assert qemu_pids_for(limactl.home) == [qemu]
    assert _boot_id(limactl) == boot  # the same boot of the same guest
    assert _record(limactl)["status"] == "Running"
    assert "attach" in (limactl.home / "t" / "ha.stderr.log").read_text()


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_event_log_never_kills_the_guest(
    limactl: Limactl, running: Path, damage: str
) -> None:
    qemu, boot = _pid(limactl.home, "qemu.pid"), _boot_id(limactl)
    log = limactl.home / "t" / "ha.stdout.log"
    if damage == "truncate":
        log.write_bytes(b"")
    else:
        log.write_bytes(b'{"time": "x", "status": \x00\xff not json\n' * 50)
    elapsed, proc = _timed(limactl, "apply", str(running))
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]
    assert "t: unchanged" in proc.stdout  # type: ignore[attr-defined]
    assert elapsed < 10
    assert qemu_pids_for(limactl.home) == [qemu]
    assert _boot_id(limactl) == boot


def test_stop_with_a_stuck_host_agent_returns_in_time(limactl: Limactl, running: Path) -> None:
    # Last: it stops the shared instance.
    agent = _pid(limactl.home, "ha.pid")
    os.kill(agent, signal.SIGSTOP)
    try:
        elapsed, proc = _timed(limactl, "stop", "t", timeout=200)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGCONT)
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]
    assert elapsed < 45
    assert qemu_pids_for(limactl.home) == []
    assert _record(limactl)["status"] == "Stopped"
    # The guest was asked to power down before anything was killed.
    assert "powering the guest down" in proc.stderr  # type: ignore[attr-defined]
