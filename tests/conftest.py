"""Test tiers by folder: tests/unit -> unit, tests/component -> component,
tests/integration -> integration. `pytest -m "not integration"` skips the VMs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(ROOT)
        tier = rel.parts[0] if rel.parts else ""
        if tier in ("unit", "component", "integration"):
            item.add_marker(getattr(pytest.mark, tier))


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
