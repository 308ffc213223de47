"""lima.commands.startextras: `--progress` copies what the console log gains (and only
that) to stderr; `--foreground` records SIGTERM instead of dying, until it is done."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from lima.commands import startextras

pytestmark = pytest.mark.component


def test_progress_shows_new_console_lines_only(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"an earlier boot\n")
    with startextras.progress(tmp_path, True), log.open("ab") as f:
        f.write(b"[    0.1] Linux version\r\ncloud-init: provisio")
        f.flush()
        time.sleep(3 * startextras.POLL)
        f.write(b"ning done\nno newline yet")
    err = capsys.readouterr().err
    assert err.splitlines() == ["[console] [    0.1] Linux version",
                                "[console] cloud-init: provisioning done"]


def test_progress_off_shows_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "serial.log").write_bytes(b"")
    with startextras.progress(tmp_path, False):
        (tmp_path / "serial.log").write_bytes(b"x\n")
        time.sleep(2 * startextras.POLL)
    assert capsys.readouterr().err == ""


def test_foreground_records_sigterm_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with startextras.foreground(True) as asked:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert asked == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
