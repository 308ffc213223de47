"""What a running snapshot was taken in: the QEMU and the VM shape beside each tag.

`limactl snapshot create` (lima.commands.snapshot) records, for a snapshot of a running
instance, the qemu that ran (its binary's identity and version) and the options of its argv
that shape the machine (machine type, cpus, memory, devices, drives); `snapshot apply`
compares the record with the qemu running now and refuses, before anything is paused, when
they differ: QEMU's `loadvm` into another binary or another machine fails half-way and
leaves the guest paused with a partly restored state. `snapshot delete` removes the record.

The records live in one file, `snapshots.json` in the instance directory (tags may hold
characters a file name cannot), keyed by tag. A snapshot without a record (taken while
stopped, or by an older limapy) is applied as before. Paths under the instance directory
are recorded relative to it, so a renamed instance keeps matching its snapshots.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from lima import paths
from lima.drivers import procs
from lima.drivers.suspend import file_identity
from lima.fsutil import atomic_write

RECORD_VERSION = 1
_DIR = "{{.Dir}}"
# The options of qemu's argv that make up the machine loadvm restores into (each takes one
# value). Sockets, pid files, names, displays, netdev backends and the kernel command line
# do not change what a saved VM state holds.
SHAPE_OPTIONS = frozenset({
    "-machine", "-M", "-cpu", "-smp", "-m", "-accel", "-device", "-drive", "-blockdev",
    "-bios", "-virtfs", "-object", "-global",
})


def shape(argv: list[str], inst_dir: Path) -> list[str]:
    """The machine-shaping options of `argv`, in order, as "OPTION VALUE" strings (pure)."""
    out: list[str] = []
    for i, arg in enumerate(argv[:-1]):
        if arg in SHAPE_OPTIONS:
            value = argv[i + 1].replace(str(inst_dir), _DIR)
            out.append(f"{'-machine' if arg == '-M' else arg} {value}")
    return out


def difference(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """Why a snapshot recorded as `recorded` cannot be loaded into the VM `current` (both as
    `running_record` makes them); "" when they match (pure)."""
    if recorded.get("qemuVersion") != current.get("qemuVersion"):
        return (f"it was taken by QEMU {recorded.get('qemuVersion')}, the instance now runs "
                f"QEMU {current.get('qemuVersion')}")
    if recorded.get("qemuBinaryIdentity") != current.get("qemuBinaryIdentity"):
        return (f"it was taken by another QEMU binary ({recorded.get('qemuBinary')}) than "
                f"the one the instance runs now ({current.get('qemuBinary')})")
    old, new = list(recorded.get("shape") or []), list(current.get("shape") or [])
    if old == new:
        return ""
    gone = [o for o in old if o not in new]
    added = [o for o in new if o not in old]
    parts = []
    if gone:
        parts.append("then " + "; ".join(f"`{o}`" for o in gone))
    if added:
        parts.append("now " + "; ".join(f"`{o}`" for o in added))
    if not parts:
        parts.append("its devices are in another order")
    return "the VM's shape changed since it was taken (" + ", ".join(parts) + ")"


def running_record(inst_dir: Path, version: str) -> dict[str, Any] | None:
    """The record of the instance's running qemu (`version`: what QMP query-version says),
    None when no qemu of this instance runs."""
    pid = procs.qemu_pid(inst_dir)
    if pid is None:
        return None
    argv = procs.cmdline(pid)
    if not argv:
        return None
    # /proc/PID/exe is the binary that runs, even when its file was replaced since.
    return {"version": RECORD_VERSION, "qemuBinary": argv[0],
            "qemuBinaryIdentity": file_identity(Path(f"/proc/{pid}/exe")),
            "qemuVersion": version, "shape": shape(argv, inst_dir)}


def _read_all(inst_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((inst_dir / paths.SNAPSHOTS_META).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(inst_dir: Path, tag: str) -> dict[str, Any] | None:
    """The record of snapshot `tag`, None when there is none (or not one this code reads)."""
    rec = _read_all(inst_dir).get(tag)
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        return None
    return rec


def write(inst_dir: Path, tag: str, record: dict[str, Any] | None) -> None:
    """Set (or with None remove) the record of `tag`; the file goes when it is empty."""
    records = _read_all(inst_dir)
    if record is None and tag not in records:
        return
    if record is None:
        del records[tag]
    else:
        records[tag] = record
    target = inst_dir / paths.SNAPSHOTS_META
    if not records:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return
    atomic_write(target, json.dumps(records, indent=1, sort_keys=True) + "\n")
