"""lima.schemas.sizes: go-units RAMInBytes semantics (every unit binary)."""

from __future__ import annotations

import pytest

from lima.schemas.sizes import format_size, parse_size

GiB = 1 << 30


@pytest.mark.parametrize(("text", "expected"), [
    ("4GiB", 4 * GiB), ("4G", 4 * GiB), ("4g", 4 * GiB), ("4GB", 4 * GiB), ("4 GiB", 4 * GiB),
    ("2.5GiB", 5 * GiB // 2), ("100GiB", 100 * GiB), ("128KiB", 128 * 1024), ("512m", 512 << 20),
    ("1TiB", 1 << 40), ("1PiB", 1 << 50), ("1024", 1024), ("1.5", 1), (4096, 4096), (0, 0),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1", "4XiB", "1.2.3", "4 GiBs", "four", "4GiB ram"])
def test_invalid_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("value", [-1, True, None, 4.5, [4]])
def test_invalid_size_types(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "text"), [
    (4 * GiB, "4GiB"), (5 * GiB // 2, "2.5GiB"), (1536 << 20, "1.5GiB"), (100 * GiB, "100GiB"),
    (128 * 1024, "128KiB"), (1000, "1000B"), (0, "0B"),
])
def test_format_size_round_trips(n: int, text: str) -> None:
    assert format_size(n) == text
    assert parse_size(text) == n
