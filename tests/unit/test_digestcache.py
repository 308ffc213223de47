"""lima.drivers.digestcache: a file's sha256 kept under its identity, never a stale one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lima.drivers import digestcache
from lima.drivers.images import baserecord


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_unchanged_since_is_not_read_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kernel, cache = tmp_path / "kernel", tmp_path / "cache"
    kernel.write_bytes(b"vmlinuz bytes")
    assert digestcache.sha256(kernel, cache) == _sha(b"vmlinuz bytes")
    entries = json.loads((cache / digestcache.CACHE_FILE).read_text())
    assert entries[str(kernel)]["sha256"] == _sha(b"vmlinuz bytes")

    def unread(path: Path) -> baserecord.BaseRecord:
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(baserecord, "digest_file", unread)
    assert digestcache.sha256(kernel, cache) == _sha(b"vmlinuz bytes")


def test_a_rewritten_or_replaced_file_is_hashed_again(tmp_path: Path) -> None:
    kernel, cache = tmp_path / "kernel", tmp_path / "cache"
    kernel.write_bytes(b"first")
    digestcache.sha256(kernel, cache)
    before = kernel.stat().st_mtime_ns
    kernel.write_bytes(b"other")  # same size, new bytes
    # Within one tick of the file system's clock a rewrite could keep the time: not here.
    os.utime(kernel, ns=(before + 1_000_000, before + 1_000_000))
    assert digestcache.sha256(kernel, cache) == _sha(b"other")
    other = tmp_path / "new"
    other.write_bytes(b"third")
    other.replace(kernel)  # another inode at the same path
    assert digestcache.sha256(kernel, cache) == _sha(b"third")


def test_a_damaged_or_unwritable_cache_only_costs_a_hash(tmp_path: Path) -> None:
    kernel, cache = tmp_path / "kernel", tmp_path / "cache"
    kernel.write_bytes(b"bytes")
    cache.mkdir()
    (cache / digestcache.CACHE_FILE).write_text("{not json")
    assert digestcache.sha256(kernel, cache) == _sha(b"bytes")
    # A stored digest that is not one is not believed.
    entries = json.loads((cache / digestcache.CACHE_FILE).read_text())
    entries[str(kernel)]["sha256"] = "short"
    (cache / digestcache.CACHE_FILE).write_text(json.dumps(entries))
    assert digestcache.sha256(kernel, cache) == _sha(b"bytes")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert digestcache.sha256(kernel, blocked / "cache") == _sha(b"bytes")


def test_entries_of_files_gone_are_dropped(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    digestcache.sha256(a, cache)
    a.unlink()
    digestcache.sha256(b, cache)
    entries = json.loads((cache / digestcache.CACHE_FILE).read_text())
    assert sorted(entries) == [str(b)]


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        digestcache.sha256(tmp_path / "absent", tmp_path / "cache")
