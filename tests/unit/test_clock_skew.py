"""The heartbeat's reading of the guest clock (lima.drivers.ssh.clock_skew)."""

from __future__ import annotations

import pytest

from lima.drivers.ssh import MAX_CLOCK_SKEW, clock_skew

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("out", "host", "skew"), [
    ("1000\n", 1000.5, 0.0),  # the same second: no skew
    ("1000", 1020.5, -20.0),  # a guest that was paused for 20 s is behind
    (" 1100 \n", 1000.5, 100.0),
])
def test_skew_is_guest_minus_host(out: str, host: float, skew: float) -> None:
    assert clock_skew(out, host) == pytest.approx(skew)


@pytest.mark.parametrize("out", ["", "Thu Jan  1 00:00:00 UTC 1970", "12.5", "date: bad"])
def test_an_answer_that_is_no_number_is_no_skew(out: str) -> None:
    assert clock_skew(out, 1000.0) is None


def test_whole_second_rounding_stays_under_the_threshold() -> None:
    # `date +%s` truncates: a guest in step with the host reads up to 1 s low.
    assert abs(clock_skew("999", 1000.99) or 0) < MAX_CLOCK_SKEW
