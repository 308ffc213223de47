"""Suspend and resume: the guest's whole state saved to suspend.state, and loaded back.

The host agent (lima.drivers.hostagent.daemon) calls `save_state()` when asked to suspend
(SIGUSR1) and `load_state()` when started with `--resume`; the driver
(lima.drivers.instance) reads what was saved (`read_saved`, `stale_reason`) to observe an
instance, and removes it (`discard`) when it can no longer be resumed.

The state is written atomically: QEMU migrates into suspend.state.tmp (an fd handed over
QMP `getfd`: QEMU 7.2 has no `file:` URI); only once QMP reports the migration
`completed` is the file fsynced, suspend.json written beside it, and the temp renamed to
suspend.state. A kill at any point leaves either the running (or paused) guest with at
most a temp file, or a complete saved state; `remove_temp` clears a leftover temp.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lima import paths
from lima.drivers.qmp import QMPClient, QMPUnavailable
from lima.errors import LimaError, TemporaryError
from lima.fsutil import atomic_write, fsync_dir

log = logging.getLogger(__name__)

META_VERSION = 1
# In every refusal of a suspend because of a 9p mount (lima.drivers.suspendmounts, which the
# host agent runs): lima.drivers.suspendop then fails the suspend at once, never retries it.
MOUNT_REFUSED = "QEMU cannot save a guest with a mounted 9p export"
FD_NAME = "limastate"
_POLL = 0.05
_QMP_POLL = 0.02  # the just-started qemu's QMP socket appears within about 0.1 s
_EVENT_WAIT = 1.0  # without a MIGRATION event for this long, query-status is asked
# Migration to a local file is bounded by the disk, not a network: no bandwidth cap.
UNLIMITED = 1 << 40


def file_identity(path: Path) -> dict[str, Any] | None:
    """What tells a file from a changed or replaced one: inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtimeNs": st.st_mtime_ns}


def disk_files(argv: list[str]) -> list[str]:
    """Every `file=` a -drive/-blockdev of qemu's argv opens (disks, cidata, kernel...)."""
    found: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("-kernel", "-initrd") and i + 1 < len(argv):
            found.append(argv[i + 1])
        for part in arg.replace(",,", "\0").split(","):
            if part.startswith("file=") and not part.startswith("file=/dev/"):
                found.append(part[len("file="):].replace("\0", ","))
    return sorted(set(found))


def qemu_binary(argv: list[str]) -> str:
    """The qemu binary of the argv (lima.drivers.qemu puts its resolved path first); its
    identity stands for its version too: an upgrade replaces the file."""
    return argv[0]


def _meta(inst: Path, argv: list[str], generation: str, iid: str, ssh_port: int,
          version: str, boot_done: bool = False) -> dict[str, Any]:
    binary = qemu_binary(argv)
    return {
        "version": META_VERSION,
        "generation": generation,
        "iid": iid,
        # boot.sh had written /run/lima-boot-done with `iid`: the resumed guest has it too.
        "bootDone": boot_done,
        "sshLocalPort": ssh_port,
        "qemuArgv": argv,
        "qemuBinary": binary,
        "qemuBinaryIdentity": file_identity(Path(binary)),
        "qemuVersion": version,
        "disks": {f: file_identity(inst / f) for f in disk_files(argv)},
        "savedAt": time.time(),
    }


def boot_done_saved(inst: Path, iid: str) -> bool:
    """Whether the saved state is of a guest whose boot.sh had finished its boot `iid`
    without failures: its resumed readiness needs no look at the markers."""
    meta = read_saved(inst)
    return meta is not None and meta.get("iid") == iid and meta.get("bootDone") is True


def without_incoming(argv: Sequence[str]) -> list[str]:
    """qemu's argv as a cold boot runs it: a resumed qemu's `-incoming defer` dropped."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-incoming":
            skip = True
        else:
            out.append(arg)
    return out


def read_saved(inst: Path) -> dict[str, Any] | None:
    """suspend.json of a complete saved state (suspend.state beside it), else None."""
    if not (inst / paths.SUSPEND_STATE).is_file():
        return None
    try:
        meta = json.loads((inst / paths.SUSPEND_META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("version") != META_VERSION:
        return None
    argv = meta.get("qemuArgv")
    if not isinstance(meta.get("generation"), str) or not isinstance(argv, list) or not argv:
        return None
    return meta


def stale_reason(inst: Path, meta: dict[str, Any]) -> str:
    """Why the saved state cannot be loaded whatever the spec ("" when it can): the qemu
    binary (so its version) or a disk changed since it was saved."""
    argv = [str(a) for a in meta["qemuArgv"]]
    binary = qemu_binary(argv)
    if binary != meta.get("qemuBinary") or file_identity(Path(binary)) != meta.get(
            "qemuBinaryIdentity"):
        return f"the QEMU binary {binary} changed since the instance was suspended"
    disks = meta.get("disks")
    if not isinstance(disks, dict):
        return "the saved state does not record its disks"
    for name, ident in sorted(disks.items()):
        if file_identity(inst / name) != ident:
            return f"{name} changed since the instance was suspended"
    return ""


def discard(inst: Path) -> None:
    """Remove the saved state (state, its record, any temp); the rename is made durable."""
    for name in (paths.SUSPEND_STATE, paths.SUSPEND_META, paths.SUSPEND_TMP):
        with contextlib.suppress(FileNotFoundError):
            (inst / name).unlink()
    fsync_dir(inst)


def remove_temp(inst: Path) -> bool:
    """Remove a half-written suspend.state.tmp (its writer is gone); True when there was one."""
    try:
        (inst / paths.SUSPEND_TMP).unlink()
    except FileNotFoundError:
        return False
    return True


class LoadCutShort(LimaError):
    """The qemu attached to is still waiting for (or loading) a state its host agent was
    to give it: the guest never ran, and nothing will give it that state now."""


def continue_interrupted(inst: Path, *, pause_boot: bool = False) -> bool:
    """For a host agent attaching to a running qemu: when its predecessor was killed in the
    middle of a suspend (the guest paused, the state not saved), cancel what is left of the
    migration and continue the guest. True when it did. `pause_boot`: the qemu boots with
    a pause word, so a paused guest may be one its agent was saving as a boot template
    (lima.drivers.boottemplate). Raises LoadCutShort when the qemu is still `inmigrate`
    (its agent was killed while it loaded a boot template)."""
    if read_saved(inst) is not None:
        return False  # saved: the reconciler finishes the suspend instead
    with QMPClient(inst / paths.QMP_SOCK, timeout=10.0) as qmp:
        reply = qmp.execute("query-status")
        status = reply.get("status") if isinstance(reply, dict) else None
        if status == "inmigrate":
            raise LoadCutShort("its host agent was killed while qemu loaded the guest's "
                               "state: the guest never ran")
        interrupted = status in ("postmigrate", "finish-migrate") or (
            status == "paused" and (pause_boot or (inst / paths.SUSPEND_TMP).exists()))
        if not interrupted:
            return False
        with contextlib.suppress(LimaError):
            qmp.execute("migrate_cancel")
        qmp.execute("cont")
    remove_temp(inst)
    return True


def _version(qmp: QMPClient) -> str:
    reply = qmp.execute("query-version")
    q = reply.get("qemu", {}) if isinstance(reply, dict) else {}
    return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}"


def save_state(inst: Path, argv: list[str], *, generation: str, iid: str, ssh_port: int,
               timeout: float = 300.0, boot_done: bool = False) -> None:
    """Pause the guest and migrate its whole state into suspend.state (see the module doc).
    On a failure the guest is left paused (the caller continues it) and no state is kept.
    `boot_done`: readiness had read boot.sh's boot-done marker with `iid` (suspend.json's
    bootDone, `boot_done_saved`). Raises LimaError."""
    deadline = time.monotonic() + timeout
    tmp = inst / paths.SUSPEND_TMP
    with QMPClient(inst / paths.QMP_SOCK, timeout=10.0) as qmp:
        qmp.execute("stop")
        version = _version(qmp)
        qmp.execute("migrate-set-parameters", {"max-bandwidth": UNLIMITED})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            migrate_out(qmp, fd, deadline, timeout)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            remove_temp(inst)
            raise
        os.close(fd)
    meta = _meta(inst, argv, generation, iid, ssh_port, version, boot_done)
    atomic_write(inst / paths.SUSPEND_META, json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, inst / paths.SUSPEND_STATE)  # the commit point
    fsync_dir(inst)


def migrate_out(qmp: QMPClient, fd: int, deadline: float, timeout: float) -> None:
    """Migrate the (paused) guest's state into `fd` and wait until QMP says completed.
    Raises LimaError when QEMU failed it or it ran past `deadline` (then cancelled)."""
    qmp.pass_fd(FD_NAME, fd)
    qmp.execute("migrate", {"uri": f"fd:{FD_NAME}"})
    while True:
        info = qmp.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            why = info.get("error-desc") or status
            raise LimaError(f"saving the guest's state failed: {why}")
        if time.monotonic() > deadline:
            with contextlib.suppress(LimaError):
                qmp.execute("migrate_cancel")
            raise LimaError(f"saving the guest's state took over {timeout:g} s")
        time.sleep(_POLL)


def connect_incoming(sock: Path, deadline: float,
                     alive: Callable[[], bool] = lambda: True) -> QMPClient:
    """A QMP client of the qemu just started with `-incoming defer`, whose socket appears
    within about 0.1 s; QMPUnavailable past `deadline` or once `alive()` says qemu is gone."""
    qmp = QMPClient(sock, timeout=10.0)
    while True:
        try:
            qmp.connect()
            return qmp
        except QMPUnavailable:
            if time.monotonic() > deadline or not alive():
                raise
            time.sleep(_QMP_POLL)


def migrate_in(qmp: QMPClient, path: Path, deadline: float, timeout: float) -> str:
    """Load the state saved in `path` into the waiting qemu; its run state after."""
    # A MIGRATION event tells when the load is over: no query-status polls that would
    # take turns with the load in QEMU's main loop.
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": "events", "state": True}]})
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        qmp.pass_fd(FD_NAME, fd)
        qmp.execute("migrate-incoming", {"uri": f"fd:{FD_NAME}"})
        return _await_incoming(qmp, deadline, timeout)
    finally:
        os.close(fd)


def load_state(inst: Path, *, timeout: float = 120.0) -> None:
    """Into the qemu just started with `-incoming defer`: load suspend.state, move it aside
    (to suspend.state.tmp: the guest is about to move on from it, so it must never be loaded
    again), then `cont`. The caller removes the temp (remove_temp) once readiness is on its
    way: unlinking a file of hundreds of MiB takes a while. Raises LimaError
    (TemporaryError when QMP never answered)."""
    began = time.monotonic()
    deadline = began + timeout
    qmp = connect_incoming(inst / paths.QMP_SOCK, deadline)
    log.info("QMP answered (%.2f s after the load began)", time.monotonic() - began)
    with qmp:
        status = migrate_in(qmp, inst / paths.SUSPEND_STATE, deadline, timeout)
        log.info("state loaded (%.2f s after the load began): %s", time.monotonic() - began,
                 status)
        # The commit point of a resume: suspend.state is gone before the guest runs.
        os.replace(inst / paths.SUSPEND_STATE, inst / paths.SUSPEND_TMP)
        with contextlib.suppress(FileNotFoundError):
            (inst / paths.SUSPEND_META).unlink()
        fsync_dir(inst)
        if status != "running":
            qmp.execute("cont")


def _await_incoming(qmp: QMPClient, deadline: float, timeout: float) -> str:
    """Wait for the incoming migration to end; QEMU's run state then. Raises LimaError
    when it failed, TemporaryError past `deadline`."""
    while True:
        event = qmp.wait_event("MIGRATION", min(deadline, time.monotonic() + _EVENT_WAIT))
        migration = event.get("data", {}).get("status") if event is not None else None
        if migration in ("failed", "cancelled"):
            raise LimaError(f"loading the saved state failed: {migration}")
        if migration == "completed" or event is None:
            # Completed; or no word for a while: the run state says (an event missed).
            reply = qmp.execute("query-status")
            status = reply.get("status") if isinstance(reply, dict) else None
            if status not in ("inmigrate", "prelaunch"):
                return str(status)
        if time.monotonic() > deadline:
            raise TemporaryError(f"loading the saved state took over {timeout:g} s")
