"""Lima's MAC addresses: one derivation for the slirp NIC and for `networks:` entries.

Called by `lima.schemas.defaults` (each network entry's `macAddress`) and
`lima.drivers.qemu` (the user-mode NIC). Pure.
"""

from __future__ import annotations

# Lima's prefix: locally administered, unicast.
PREFIX = bytes([0x52, 0x55, 0x55])


def mac_address(unique_id: str, machine_id: str) -> str:
    """52:55:55 + the first 3 bytes of sha256(machine id + unique id), as Lima derives it:
    stable for one instance on one host, different for another instance or host."""
    import hashlib  # deferred: OpenSSL's hashlib costs ~3 ms of start-up

    digest = hashlib.sha256((machine_id + unique_id).encode()).digest()
    return ":".join(f"{b:02x}" for b in PREFIX + digest[:3])
