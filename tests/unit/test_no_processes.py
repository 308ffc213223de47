"""tests/conftest.py keeps unit tests pure: starting a process fails them, unless the test
is marked `processes`; unit tests also get a short timeout."""

from __future__ import annotations

import os
import subprocess

import pytest

from lima.drivers import runner


def test_a_unit_test_cannot_start_a_process() -> None:
    with pytest.raises(AssertionError, match="started a process"):
        subprocess.run(["true"], check=True)
    with pytest.raises(AssertionError, match="started a process"):
        runner.run(["true"])
    with pytest.raises(AssertionError, match="started a process"):
        os.execvp("true", ["true"])


@pytest.mark.processes
def test_a_marked_unit_test_can() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


def test_unit_tests_have_a_short_timeout(request: pytest.FixtureRequest) -> None:
    mark = request.node.get_closest_marker("timeout")
    assert mark is not None and mark.args[0] <= 30
