"""The generated ssh identity: created once, private, reused; ~/.ssh keys only on request."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from lima import paths
from lima.drivers import identity
from tests.unit.cidata_fixtures import make_spec, with_ssh

OTHER_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFjWmFNLf6Rj3W4G70cU0X87yRBvmKgY3+e1HjKeu7Fj other@host"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    return h


def test_created_once_private_and_reused(home: Path) -> None:
    first = identity.ensure_identity()
    assert first.private_key == paths.user_identity()
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600
    assert first.public_key.startswith("ssh-ed25519 ") and first.public_key.endswith(" lima")
    assert first.public_key_path.read_text() == first.public_key + "\n"
    mtime = first.private_key.stat().st_mtime_ns
    second = identity.ensure_identity()
    assert second == first
    assert first.private_key.stat().st_mtime_ns == mtime


def test_private_key_matches_public_key(home: Path) -> None:
    ident = identity.ensure_identity()
    key = load_ssh_private_key(ident.private_key.read_bytes(), password=None)
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert ident.public_key.split()[:2] == pub.decode().split()[:2]


def test_missing_public_key_regenerates_pair(home: Path) -> None:
    ident = identity.ensure_identity()
    ident.public_key_path.unlink()
    again = identity.ensure_identity()
    assert again.public_key != ident.public_key
    assert again.public_key_path.exists()


def test_garbage_public_key_is_a_clear_error(home: Path) -> None:
    ident = identity.ensure_identity()
    ident.public_key_path.write_text("not a key\n")
    with pytest.raises(identity.PermanentError, match="not an OpenSSH public key"):
        identity.ensure_identity()


def test_dot_ssh_keys_only_when_asked(home: Path) -> None:
    (home / ".ssh" / "id_ed25519.pub").write_text(OTHER_KEY + "\n")
    (home / ".ssh" / "junk.pub").write_text("hello world\n")
    spec = make_spec()
    ours = identity.ensure_identity().public_key
    assert identity.authorized_keys(spec) == [ours]
    assert identity.authorized_keys(with_ssh(spec, load_dot_ssh_pubkeys=True)) == [ours, OTHER_KEY]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (OTHER_KEY, True),
        ("ssh-rsa " + OTHER_KEY.split()[1], False),  # algorithm differs from the blob's
        ("ssh-ed25519 !!!", False),
        ("ssh-ed25519", False),
        (OTHER_KEY + "\n" + OTHER_KEY, False),
    ],
)
def test_is_public_key(text: str, ok: bool) -> None:
    assert identity.is_public_key(text) is ok
