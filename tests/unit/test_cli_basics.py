"""The CLI entry point: version, help, unknown verbs."""

from __future__ import annotations

import pytest

from lima.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from lima import LIMA_COMPAT_VERSION
    assert capsys.readouterr().out == f"limactl version {LIMA_COMPAT_VERSION}\n"  # as Lima's


def test_unknown_verb_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 2
