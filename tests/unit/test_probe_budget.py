"""How long readiness probes are retried (lima.states.policy, lima.drivers.postboot): Lima's
budget per probe, all probes within the provisioned phase's deadline, the env overrides,
and the Degraded line a probe that never passes leaves (description, attempts, hint)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lima.drivers import postboot
from lima.errors import TemporaryError
from lima.schemas.spec import Probe
from lima.states.phases import Phase
from lima.states.policy import (
    PHASE_DEADLINES,
    POSTBOOT_BUDGET,
    PROBE_BUDGET,
    PROBE_INTERVAL,
    REPORT_MARGIN,
    probe_budget,
)
from tests.unit.cidata_fixtures import make_spec


def test_budget_is_limas_200_attempts_3_s_apart() -> None:
    # pkg/hostagent/requirements.go: retries = 200, sleepDuration = 3 s.
    assert PROBE_INTERVAL == 3.0
    assert PROBE_BUDGET == 600.0  # `limactl start --timeout`'s default, too
    assert probe_budget(0.0) == PROBE_BUDGET


def test_the_provisioned_phase_outlasts_a_full_probe_budget_and_the_report() -> None:
    deadline = PHASE_DEADLINES[Phase.PROVISIONED]
    assert deadline >= PROBE_BUDGET + REPORT_MARGIN
    assert deadline - REPORT_MARGIN == POSTBOOT_BUDGET
    # Whatever time has passed, the probes end a margin before the deadline aborts.
    for elapsed in (0.0, 50.0, 100.0, 500.0, 700.0, 10_000.0):
        assert elapsed + probe_budget(elapsed) <= deadline - REPORT_MARGIN or \
            probe_budget(elapsed) == 0.0


@pytest.mark.parametrize(("elapsed", "per_probe", "expected"), [
    (0.0, 600.0, 600.0),
    (100.0, 600.0, POSTBOOT_BUDGET - 100.0),  # cut to what the phase has left
    (POSTBOOT_BUDGET + 5, 600.0, 0.0),  # nothing left: tried once
    (0.0, 8.0, 8.0),  # LIMAPY_PROBE_TIMEOUT (tests) wins when shorter
])
def test_probe_budget(elapsed: float, per_probe: float, expected: float) -> None:
    assert probe_budget(elapsed, per_probe) == pytest.approx(expected)


def test_probe_timeout_reads_the_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postboot.PROBE_TIMEOUT_ENV, raising=False)
    assert postboot.probe_timeout(100.0, 100.0) == PROBE_BUDGET
    monkeypatch.setenv(postboot.PROBE_TIMEOUT_ENV, "8")
    assert postboot.probe_timeout(100.0, 100.0) == 8.0
    assert postboot.probe_timeout(100.0, 100.0, retry=False) == 0.0
    monkeypatch.setenv(postboot.PROBE_TIMEOUT_ENV, "junk")  # ignored, not fatal
    assert postboot.probe_timeout(100.0, 100.0) == PROBE_BUDGET


class FakeGuest:
    """Stands in for postboot._exec: a probe fails `fail_first` times, then passes."""

    def __init__(self, fail_first: int, *, unreachable: bool = False) -> None:
        self.fail_first, self.unreachable = fail_first, unreachable
        self.calls = 0

    def __call__(self, _client: Any, _command: str, _stdin: bytes = b"", *,
                 timeout: float) -> tuple[int, bytes, bytes]:
        assert timeout >= 10.0  # one attempt never gets less than 10 s
        self.calls += 1
        if self.unreachable:
            raise TemporaryError("ssh: connection reset")
        if self.calls <= self.fail_first:
            return 1, b"", b"not yet\n"
        return 0, b"", b""


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(postboot.PROBE_INTERVAL_ENV, "0.01")
    monkeypatch.setenv(postboot.PROBE_TIMEOUT_ENV, "5")
    yield


PROBE = Probe(mode="readiness", script="#!/bin/sh\ntest -e /run/x\n", description="x exists",
              hint="see /var/log/x.log\n  in the guest")


def test_a_probe_passing_after_retries_leaves_no_error(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest = FakeGuest(fail_first=4)
    monkeypatch.setattr(postboot, "_exec", guest)
    spec = make_spec(probes=(PROBE,))
    assert postboot.run_probes(None, spec, threading.Event()) == []  # type: ignore[arg-type]
    assert guest.calls == 5


def test_a_probe_that_never_passes_is_reported_with_description_and_hint(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(postboot.PROBE_INTERVAL_ENV, "0.01")
    monkeypatch.setenv(postboot.PROBE_TIMEOUT_ENV, "0.2")
    guest = FakeGuest(fail_first=10**6)
    monkeypatch.setattr(postboot, "_exec", guest)
    spec = make_spec(probes=(PROBE,))
    (error,) = postboot.run_probes(None, spec, threading.Event())  # type: ignore[arg-type]
    assert error.startswith("probe 1 of 1 ('x exists') failed (exit 1, ")
    assert f"{guest.calls} attempts" in error and guest.calls > 3
    assert "hint: see /var/log/x.log in the guest" in error
    assert error.endswith("last output: not yet")


def test_probes_share_the_phase_budget(fast: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started long ago (the phase is almost over): each probe is tried once, not retried."""
    guest = FakeGuest(fail_first=10**6, unreachable=True)
    monkeypatch.setattr(postboot, "_exec", guest)
    spec = make_spec(probes=(PROBE, PROBE))
    import time

    started = time.monotonic() - POSTBOOT_BUDGET
    errors = postboot.run_probes(None, spec, threading.Event(),  # type: ignore[arg-type]
                                 started=started)
    assert guest.calls == 2
    assert [e.split(" failed ")[1].split(")")[0] for e in errors] == [
        "(not run, 1 attempt", "(not run, 1 attempt"]


def test_after_a_failed_boot_each_probe_is_tried_once(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest = FakeGuest(fail_first=10**6)
    monkeypatch.setattr(postboot, "_exec", guest)
    spec = make_spec(probes=(PROBE,))
    errors = postboot.run_probes(None, spec, threading.Event(),  # type: ignore[arg-type]
                                 retry=False)
    assert guest.calls == 1 and len(errors) == 1


def test_stop_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postboot.PROBE_INTERVAL_ENV, "0.01")
    monkeypatch.delenv(postboot.PROBE_TIMEOUT_ENV, raising=False)  # the full 600 s
    guest = FakeGuest(fail_first=10**6)
    monkeypatch.setattr(postboot, "_exec", guest)
    stop = threading.Event()
    stop.set()  # the host agent is stopping
    errors = postboot.run_probes(None, make_spec(probes=(PROBE,)), stop)  # type: ignore[arg-type]
    assert guest.calls == 1 and "1 attempt" in errors[0]
