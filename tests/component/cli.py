"""Run the real `limactl` entry point in-process for component tests: exit code, stdout,
stderr (the CLI always ends with SystemExit)."""

from __future__ import annotations

import pytest

from lima.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err
