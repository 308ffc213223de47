"""status.json under faults: bytes that are not UTF-8, a directory in its place, and writes
the OS refuses (disk full, read-only LIMA_HOME). Nothing escapes as a bare OSError, nothing
that was there is destroyed, and each unusable file is reported once."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from lima.controller.status_store import StatusStore, StatusWriteError
from lima.states.model import Status
from lima.states.phases import Phase


@pytest.fixture
def inst(_isolated_home: Path) -> Path:
    d = _isolated_home / "vm"
    d.mkdir()
    return d


@pytest.mark.parametrize("raw", [b"\xff\xfe{", b'{"version": 1, "phase": "\xc3"}', b"\x80" * 10])
def test_bytes_that_are_not_utf8_are_treated_as_missing(
    inst: Path, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (inst / "status.json").write_bytes(raw)
    with caplog.at_level(logging.WARNING):
        assert StatusStore().load("vm") is None
    assert "status.json" in caplog.text and "rebuilding the status from facts" in caplog.text
    # The next save replaces the garbage with a readable file.
    assert StatusStore().save("vm", Status(phase=Phase.STOPPED)) is True
    assert StatusStore().load("vm") == Status(phase=Phase.STOPPED)


def test_a_directory_is_moved_aside_never_removed(
    inst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (inst / "status.json").mkdir()
    (inst / "status.json" / "precious").write_text("keep me")
    store = StatusStore()
    with caplog.at_level(logging.WARNING):
        assert store.load("vm") is None
        assert store.save("vm", Status(phase=Phase.RUNNING)) is True
    assert (inst / "status.json").is_file()
    assert store.load("vm") == Status(phase=Phase.RUNNING)
    (aside,) = [p for p in inst.iterdir() if p.name.startswith("status.json.aside-")]
    assert (aside / "precious").read_text() == "keep me"
    assert "moved it aside to" in caplog.text and str(aside) in caplog.text


def test_an_unusable_file_is_reported_once_until_a_save(
    inst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (inst / "status.json").write_text("{")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # a reconcile loads it every pass, with one or more stores
            assert StatusStore().load("vm") is None
    assert caplog.text.count("rebuilding the status from facts") == 1
    StatusStore().save("vm", Status(phase=Phase.STOPPED))
    (inst / "status.json").write_text("{")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        StatusStore().load("vm")
    assert caplog.text.count("rebuilding the status from facts") == 1


def _refuse(err: int, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one step of the write fail as the OS would (`where`: mkstemp, fsync, replace)."""
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, refused)


@pytest.mark.parametrize(
    ("err", "words"),
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
     (errno.EACCES, "Permission denied"), (errno.EDQUOT, "Disk quota exceeded")],
)
@pytest.mark.parametrize("where", ["mkstemp", "fsync", "replace"])
def test_a_refused_write_names_the_file_and_keeps_the_old_one(
    inst: Path, err: int, words: str, where: str
) -> None:
    store = StatusStore()
    store.save("vm", Status(phase=Phase.RUNNING, iid="iid-old"))
    with pytest.MonkeyPatch.context() as mp, pytest.raises(StatusWriteError) as info:
        _refuse(err, where, mp)
        store.save("vm", Status(phase=Phase.STOPPED))
    assert str(info.value) == f"cannot write {inst / 'status.json'}: {words}"
    assert info.value.path == inst / "status.json"
    assert store.load("vm") == Status(phase=Phase.RUNNING, iid="iid-old")
    assert sorted(p.name for p in inst.iterdir()) == ["status.json"]  # no temp left behind


def test_status_write_error_is_a_lima_error() -> None:
    from lima.errors import LimaError

    e = StatusWriteError(Path("/h/vm/status.json"), "No space left on device")
    assert isinstance(e, LimaError) and e.exit_code == 1
    assert json.dumps(str(e))  # a plain message, no repr of an OSError
