"""`limactl stop [INSTANCE]...`: several names, each stopped in turn, errors together at
the end (as Lima's stop); none means "default"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.component.test_reset_restart_delete import limactl, vm  # noqa: F401

pytestmark = pytest.mark.component


def test_each_name_is_tried_and_the_errors_come_at_the_end(vm: Path,  # noqa: F811
                                                            _isolated_home: Path) -> None:
    proc = limactl(_isolated_home, "stop", "nope1", "vm", "nope2")
    assert proc.returncode == 1
    assert "vm: stopped" in proc.stdout  # the instance between two bad names was stopped
    err = proc.stderr
    assert "'nope1' does not exist" in err and "'nope2' does not exist" in err
    assert err.index("nope1") < err.index("nope2")


def test_no_name_is_the_default_instance(_isolated_home: Path) -> None:
    proc = limactl(_isolated_home, "stop")
    assert proc.returncode == 1 and "'default' does not exist" in proc.stderr
