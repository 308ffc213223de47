"""QEMU internal snapshots of an instance's boot disk, for `limactl snapshot`.

Called by lima.commands.snapshot, under the instance lock. Which disk holds them: the
writable disk QEMU boots (lima.drivers.disklayout.boot_disk), that is limapy's `diffdisk`
(the qcow2 overlay; its `basedisk` is read-only and never changes, so reverting the overlay
reverts the guest's whole disk) or Lima 2's own `disk`. Snapshots live inside that qcow2
file: they go with the instance (clone copies them, delete removes them), and a raw disk
cannot hold them.

As Lima's QEMU driver does: when the instance's qemu runs, the snapshot covers the whole
VM (memory, devices and disk) through the HMP commands `savevm`, `loadvm`, `delvm` and
`info snapshots` (sent over QMP, lima.drivers.qmp); when it does not, `qemu-img snapshot
-c/-a/-d/-l` works on the disk alone. Unlike Lima, QEMU's silent failures are caught
here: HMP answers an error as text, `delvm` of a missing tag says nothing, and a failed
`loadvm` leaves the guest paused, so tags are checked before anything is sent.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any, NamedTuple

from lima.drivers import runner
from lima.drivers.disklayout import boot_disk
from lima.drivers.guest import BOOT_DONE_MARKER, SSH_READY_MARKER
from lima.drivers.qmp import QMPClient, QMPError, QMPUnavailable
from lima.errors import LimaError
from lima.names import guest_hostname
from lima.paths import CIDATA_META, QMP_SOCK, SSH_CONFIG, SSH_SOCK

log = logging.getLogger(__name__)

# savevm of a 4 GiB guest writes its memory: allow minutes, not QMP's usual seconds.
HMP_TIMEOUT = 600.0
QEMU_IMG_TIMEOUT = 600.0


class SnapshotError(LimaError):
    """QEMU or qemu-img refused a snapshot operation (its words in the message)."""


class Snapshot(NamedTuple):
    """One internal snapshot: its QEMU id, tag, and the size of the VM state it holds
    (0 for a disk-only snapshot, taken while the instance was stopped)."""

    id: str
    tag: str
    vm_state_size: int


def disk_path(inst_dir: Path) -> Path:
    """The qcow2 file that holds the instance's snapshots."""
    return boot_disk(inst_dir)


def _snapshots_from(items: Any) -> list[Snapshot]:
    out = []
    for s in items if isinstance(items, list) else []:
        if isinstance(s, dict) and isinstance(s.get("name"), str):
            size = s.get("vm-state-size")
            out.append(Snapshot(str(s.get("id", "")), s["name"],
                                size if isinstance(size, int) else 0))
    return out


def hmp_quote(tag: str) -> str:
    """`tag` as one HMP string argument: as is when plain, else double-quoted with QEMU's
    monitor escapes (a tag made by qemu-img may hold spaces)."""
    if tag and not any(c.isspace() or c in "\"'\\" for c in tag):
        return tag
    return '"' + tag.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'") + '"'


def _hmp_error(output: str) -> str:
    """QEMU's error text in an HMP answer ("" when it reported none)."""
    lines = [ln.strip() for ln in output.replace("\r", "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return "; ".join(e[len("Error:"):].strip() for e in errors)


class Offline:
    """Snapshots of a stopped instance: qemu-img on its boot disk."""

    def __init__(self, inst_dir: Path) -> None:
        self.disk = disk_path(inst_dir)

    def _img(self, *args: str) -> str:
        argv = ["qemu-img", "snapshot", *args, str(self.disk.absolute())]
        try:
            result = runner.run(argv, check=False, timeout=QEMU_IMG_TIMEOUT)
        except runner.CommandError as exc:  # not started, or timed out
            raise SnapshotError(str(exc)) from None
        if result.returncode != 0:
            said = result.stderr.strip() or f"exit status {result.returncode}"
            raise SnapshotError(said)
        return result.stdout

    def snapshots(self) -> list[Snapshot]:
        # qemu-img itself, not lima.drivers.images.imagecheck: that package costs ~200 ms
        # of imports, most of a stopped instance's `snapshot` verb.
        argv = ["qemu-img", "info", "-U", "--output=json", str(self.disk.absolute())]
        try:
            result = runner.run(argv, check=False, timeout=QEMU_IMG_TIMEOUT)
        except runner.CommandError as exc:
            raise SnapshotError(str(exc)) from None
        try:
            info = json.loads(result.stdout) if result.returncode == 0 else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            said = result.stderr.strip() or f"exit status {result.returncode}"
            raise SnapshotError(f"cannot read the disk {self.disk}: {said}")
        if info.get("format") != "qcow2":
            raise SnapshotError(f"{self.disk} is a {info.get('format')} disk: QEMU keeps "
                                "snapshots inside qcow2 disks only")
        return _snapshots_from(info.get("snapshots"))

    def table(self) -> str:
        """`qemu-img snapshot -l` without its "Snapshot list:" heading, as Lima prints it
        ("" when there is none). -U: list reads without the instance lock."""
        return self._img("-l", "-U").replace("Snapshot list:\n", "", 1)

    def create(self, tag: str) -> None:
        self._img("-c", tag)

    def apply(self, tag: str) -> None:
        self._img("-a", tag)

    def delete(self, tag: str) -> None:
        self._img("-d", tag)


class Online:
    """Snapshots of a running instance: HMP commands over its QMP socket."""

    def __init__(self, inst_dir: Path) -> None:
        self.inst_dir = inst_dir
        self.disk = disk_path(inst_dir)
        self.sock = inst_dir / QMP_SOCK

    def _execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            with QMPClient(self.sock, timeout=10.0) as qmp:
                return qmp.execute(command, arguments, timeout=HMP_TIMEOUT)
        except (QMPUnavailable, QMPError) as exc:
            raise SnapshotError(f"cannot reach the instance's qemu: {exc}") from None

    def hmp(self, command_line: str) -> str:
        """Run one HMP command; its output (SnapshotError when QEMU reports an error)."""
        log.info("Sending HMP %s command", command_line.split()[0])
        out = self._execute("human-monitor-command", {"command-line": command_line})
        text = out if isinstance(out, str) else ""
        error = _hmp_error(text)
        if error:
            raise SnapshotError(error)
        return text

    def qemu_version(self) -> str:
        """QEMU's version as MAJOR.MINOR.MICRO (QMP query-version)."""
        reply = self._execute("query-version")
        q = reply.get("qemu", {}) if isinstance(reply, dict) else {}
        return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}"

    def run_state(self) -> str:
        reply = self._execute("query-status")
        return str(reply.get("status", "")) if isinstance(reply, dict) else ""

    def snapshots(self) -> list[Snapshot]:
        """The boot disk's snapshots, as QEMU sees them (query-block)."""
        blocks = self._execute("query-block")
        want = str(self.disk.absolute())
        for block in blocks if isinstance(blocks, list) else []:
            inserted = block.get("inserted") if isinstance(block, dict) else None
            if isinstance(inserted, dict) and inserted.get("file") == want:
                image = inserted.get("image")
                if isinstance(image, dict):
                    return _snapshots_from(image.get("snapshots"))
                return []
        raise SnapshotError(f"the instance's qemu has no drive for {want}")

    def table(self) -> str:
        """`info snapshots` without QEMU's headings, as Lima prints it ("" when none)."""
        out = self.hmp("info snapshots").replace("\r", "")
        out = out.replace("List of snapshots present on all disks:\n", "", 1)
        return out.replace("There is no snapshot available.\n", "", 1)

    def create(self, tag: str) -> None:
        self.hmp(f"savevm {hmp_quote(tag)}")

    def apply(self, tag: str) -> None:
        """`loadvm`; a guest that ran before runs after. A failure past QEMU's own checks
        leaves it paused with a partly restored state: said so, never resumed here."""
        was = self.run_state()
        try:
            self.hmp(f"loadvm {hmp_quote(tag)}")
        except SnapshotError as exc:
            now = self.run_state()
            if was == "running" and now != "running":
                raise SnapshotError(f"{exc}; the guest is left paused ({now}), its state "
                                    "partly restored: stop it with `limactl stop -f`") from None
            raise
        self.close_ssh_master()
        self.adopt_boot()

    def close_ssh_master(self) -> None:
        """Ask the instance's ssh ControlMaster (`limactl shell`'s) to exit: its TCP
        connection is not in the restored guest's state, and the next `limactl shell`
        would wait about 18 s on it before connecting again (measured on the tiny guest)."""
        if not (self.inst_dir / SSH_SOCK).exists():
            return
        config = self.inst_dir / SSH_CONFIG
        argv = ["ssh", "-F", str(config), "-O", "exit", guest_hostname(self.inst_dir.name)]
        try:
            result = runner.run(argv, check=False, timeout=10.0)
        except runner.CommandError as exc:
            log.debug("ssh -O exit: %s", exc)
            return
        log.debug("ssh -O exit: exit %d %s", result.returncode, result.stderr.strip())

    def delete(self, tag: str) -> None:
        self.hmp(f"delvm {hmp_quote(tag)}")

    def adopt_boot(self) -> None:
        """After `loadvm`: set the guest clock to the host's at once (it is back at the
        snapshot's time), and, when the snapshot was taken in an earlier boot, rewrite the
        readiness markers the restored guest holds with this boot's IID, so a host
        agent that attaches later (lima.commands.hostagent) sees the guest it runs as ready
        instead of waiting for markers of a boot that will not happen. Best effort: a
        guest that does not answer is warned about; the snapshot is applied either way."""
        if not (self.inst_dir / SSH_CONFIG).is_file():
            return
        try:
            iid = json.loads((self.inst_dir / CIDATA_META).read_text())["iid"]
        except (OSError, ValueError, KeyError, TypeError):
            iid = None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 0.5))
        script = f"date -u -s '{stamp}' >/dev/null"
        if isinstance(iid, str) and iid.replace("-", "").isalnum():
            for marker in (SSH_READY_MARKER, BOOT_DONE_MARKER):
                script += (f"; if [ -f {marker} ] && [ \"$(cat {marker})\" != {iid} ]; then "
                           f"printf '%s\\n' {iid} > {marker}; fi")
        argv = ["ssh", "-F", str(self.inst_dir / SSH_CONFIG), "-o", "ControlMaster=no",
                "-o", "ControlPath=none", "-o", "ConnectTimeout=20",
                guest_hostname(self.inst_dir.name), "sudo -n sh -c " + shlex.quote(script)]
        try:
            result = runner.run(argv, check=False, timeout=60.0)
        except runner.CommandError as exc:
            log.warning("could not set the restored guest's clock: %s", exc)
            return
        if result.returncode != 0:
            log.warning("could not set the restored guest's clock (ssh exit %d): %s",
                        result.returncode, result.stderr.strip()[-300:])


Backend = Online | Offline


def open_backend(inst_dir: Path) -> tuple[bool, Backend]:
    """(running, backend): Online while the instance's qemu is alive (Lima asks for its
    status Running, qemu and host agent alive: a qemu whose agent died still has the disk
    open, so qemu-img could not write it), else Offline."""
    from lima.drivers import procs

    if procs.qemu_pid(inst_dir) is not None:
        return True, Online(inst_dir)
    return False, Offline(inst_dir)
