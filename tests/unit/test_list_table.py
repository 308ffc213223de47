"""`limactl list`'s table as Lima prints it: go-units sizes, and the columns Lima hides on
a narrow terminal unless --all-fields (lima.commands.listing.table)."""

from __future__ import annotations

from lima.commands.listing import table
from lima.drivers.disks import bytes_size


def test_bytes_size_is_go_units() -> None:
    assert [bytes_size(n) for n in (0, 1023, 1024, 512 * 1024**2, 1536 * 1024**2,
                                    100 * 1024**3, 1024**3 + 1)] == [
        "0B", "1023B", "1KiB", "512MiB", "1.5GiB", "100GiB", "1GiB"]


def test_narrow_terminal_hides_columns_unless_all_fields() -> None:
    rec = {"name": "a", "status": "Running", "dir": "/d", "vmType": "qemu", "arch": "x86_64",
           "sshAddress": "127.0.0.1", "sshLocalPort": 60022, "cpus": 4,
           "memory": 4 * 1024**3, "disk": 100 * 1024**3}
    wide = table([rec], all_fields=False, wide=False, width=0)[0].split()
    assert wide == ["NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY", "DISK", "DIR"]
    narrow = table([rec], all_fields=False, wide=False, width=60)[0].split()
    assert narrow == ["NAME", "STATUS", "SSH", "CPUS", "MEMORY", "DISK"]
    forced = table([rec], all_fields=True, wide=False, width=60)[0].split()
    assert forced == wide
