"""The ssh identity limapy logs into every guest with: `$LIMA_HOME/_config/user{,.pub}`.

Called by the cidata builder (the public keys go into user-data) and by the ssh side
(the private key path). The key is an ed25519 key in OpenSSH format, generated in
process with `cryptography` (no ssh-keygen needed), created once under a lock and
written atomically so concurrent limactl processes never see half a key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lima import paths
from lima.drivers import safefs
from lima.errors import PermanentError
from lima.fsutil import atomic_write
from lima.schemas.spec import InstanceSpec

KEY_COMMENT = "lima"


@dataclass(frozen=True)
class Identity:
    """The generated identity: where the private key is and what the public key says."""

    private_key: Path
    public_key: str  # one line, "ssh-ed25519 AAAA... lima", no newline

    @property
    def public_key_path(self) -> Path:
        return self.private_key.with_name(self.private_key.name + ".pub")


def ensure_identity() -> Identity:
    """Return the identity, generating `_config/user` and `user.pub` on first need."""
    private = paths.user_identity()
    public = private.with_name(private.name + ".pub")
    if not (private.exists() and public.exists()):
        safefs.make_private_dir(private.parent)  # LIMA_HOME too: 0700 whatever the umask
        # The lock serialises first-time creation: without it two processes could each
        # rename their own pair into place and leave a private key that does not match
        # the public one.
        lock_path = private.parent / ".user.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (private.exists() and public.exists()):
                _generate(private, public)
    try:
        text = public.read_text().strip()
    except OSError as exc:
        raise PermanentError(f"cannot read the ssh public key {public}: {exc}") from exc
    if not is_public_key(text):
        raise PermanentError(
            f"{public} is not an OpenSSH public key; delete {private} and {public} "
            "to have a new identity generated"
        )
    return Identity(private_key=private, public_key=text)


def _generate(private: Path, public: Path) -> None:
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    # Both files must exist for the identity to count as present, so a crash between
    # the two renames only means the pair is generated again next time.
    atomic_write(public, public_bytes + b" " + KEY_COMMENT.encode() + b"\n", mode=0o644)
    atomic_write(private, private_bytes, mode=0o600)


def is_public_key(text: str) -> bool:
    """Whether `text` looks like one OpenSSH public key line: `ALGO BASE64 [comment]`.

    The algorithm name must match the one encoded in the key blob, which rejects
    private keys, certificates' companions and other files that merely end in .pub.
    """
    if "\n" in text.strip():
        return False
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        return False
    algo, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(blob) < 4:
        return False
    (n,) = struct.unpack(">I", blob[:4])
    if len(blob) < 4 + n:
        return False
    return blob[4 : 4 + n].decode("ascii", errors="replace") == algo


def dot_ssh_public_keys() -> list[str]:
    """Every valid `~/.ssh/*.pub`, sorted by file name (unreadable or invalid ones skipped)."""
    ssh_dir = Path.home() / ".ssh"
    keys: list[str] = []
    try:
        candidates = sorted(ssh_dir.glob("*.pub"))
    except OSError:
        return keys
    for path in candidates:
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if is_public_key(text):
            keys.append(text)
    return keys


def dot_ssh_private_keys() -> list[Path]:
    """Private keys that go with `~/.ssh/*.pub` (for IdentityFile), when they exist."""
    ssh_dir = Path.home() / ".ssh"
    found: list[Path] = []
    try:
        candidates = sorted(ssh_dir.glob("*.pub"))
    except OSError:
        return found
    for pub in candidates:
        private = pub.with_suffix("")
        if private.is_file():
            found.append(private)
    return found


def authorized_keys(spec: InstanceSpec, *, identity: Identity | None = None) -> list[str]:
    """The keys the guest user accepts: ours, plus ~/.ssh/*.pub when the spec asks."""
    keys = [(identity or ensure_identity()).public_key]
    if spec.ssh.load_dot_ssh_pubkeys:
        for key in dot_ssh_public_keys():
            if key not in keys:
                keys.append(key)
    return keys
