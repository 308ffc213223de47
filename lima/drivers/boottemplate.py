"""Boot templates: an instance's first boot loaded from a saved early-boot state.

The first boot of an instance whose disk is still the image's bytes (`pristine`), of an
image whose command line says its initramfs can pause (`limapy.pausable`), gets
`limapy.pause` on its kernel command line (lima.drivers.qemu). The build:debian-12
initramfs then mounts / read-only, lets the cloud-init preload import cloud-init, prints
"limapy-pause: ready" on the console and waits for the host's go line (see
lima/assets/debian/initramfs-init). Up to there the guest has read nothing that is the
instance's own: not the cidata CD, not the NIC, not the clock, not one block the instance
could have changed. So the state at that point is the same for every instance with the
same image, QEMU and machine, and the host agent saves it once (`capture`) in the cache
(`KEY.state` in `$LIMA_BOOT_TEMPLATE_DIR`, else in `boot/` of limapy's cache directory).
A later first boot with the same key starts qemu with `-incoming defer` and loads that
state (`restore`) instead of booting the kernel and importing cloud-init again.

An instance's other boots (its disk its own by then) get `limapy.pause.early` instead:
the initramfs pauses the same way but before it loads a module or reads a disk (after
the preload imported cloud-init from the initramfs's own copy, when the image has one),
so that state (the kernel booted) is the same for every boot of the same machine whatever
its disks hold, and a second kind of template (`Template.early`, its own key: the command
line differs) skips the kernel's boot.

Either way the guest moves on only on the go line (`go_line`): the time, the instance's
MAC and fresh randomness, from which the guest's kernel reseeds its generator before
systemd draws its machine id. The key (`plan`) covers everything the saved state depends
on: qemu's argv with the instance's own paths, name, ssh port and MAC taken out, the
QEMU binary, the kernel's, initrd's and basedisk's bytes and the disk's size. An image
whose initramfs says it can pause and then does not print the ready line is watched for
READY_TIMEOUT, and boots on as any other. `LIMA_BOOT_TEMPLATES=0` turns it all off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lima import paths
from lima.drivers import digestcache, procs, suspend
from lima.drivers.qmp import QMPClient
from lima.errors import LimaError
from lima.fsutil import fsync_dir

log = logging.getLogger(__name__)

TEMPLATE_VERSION = 1
PAUSE_WORD = "limapy.pause"  # a first boot: pause after cloud-init's import
EARLY_WORD = "limapy.pause.early"  # any other boot: pause before the first module loads
PAUSABLE_WORD = "limapy.pausable"  # in an image's kernel.cmdline: its initramfs can pause
EARLY_PAUSABLE_WORD = "limapy.pausable.early"
# The word an image's command line must have for the initramfs to know a pause word.
CAPABILITY = {PAUSE_WORD: PAUSABLE_WORD, EARLY_WORD: EARLY_PAUSABLE_WORD}
READY = b"limapy-pause: ready"
GONE_ON = b"limapy-pause: go"  # the guest read the go line
ENV_SWITCH = "LIMA_BOOT_TEMPLATES"
ENV_DIR = "LIMA_BOOT_TEMPLATE_DIR"
KEEP = 8  # templates kept in the cache; the least recently used go first
READY_TIMEOUT = 90.0  # the pause comes after the kernel and the import: ~11 s under TCG
SAVE_TIMEOUT = 120.0
LOAD_TIMEOUT = 60.0
GO_TIMEOUT = 15.0
REBOOT_POLL = 0.5  # how often answer_reboots looks at the console's log
_CONNECT_TIMEOUT = 5.0

_QCOW2 = struct.Struct(">4sIQIIQIIQQIIQ")  # the qcow2 header up to snapshots_offset
_HOSTFWD = re.compile(r"(hostfwd=tcp:127\.0\.0\.1:)\d+(-:22)")
_MAC = re.compile(r"\bmac=([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})")
_VIRTFS_PATH = re.compile(r"(^|,)(path|mount_tag)=(?:[^,]|,,)*")
_VNC = re.compile(r"^vnc=(?:[^,]|,,)*")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _qcow2_header(path: Path) -> tuple[int, int, int, int, int] | None:
    """(virtual size, crypt method, L1 entries, L1 offset, snapshots) of a qcow2 file."""
    try:
        with path.open("rb") as f:
            raw = f.read(_QCOW2.size)
    except OSError:
        return None
    if len(raw) < _QCOW2.size:
        return None
    (magic, _version, _bf_off, _bf_size, _cbits, size, crypt, l1_size, l1_off, _rt_off,
     _rt_clusters, snapshots, _s_off) = _QCOW2.unpack(raw)
    if magic != b"QFI\xfb":
        return None
    return size, crypt, l1_size, l1_off, snapshots


def pristine(diffdisk: Path) -> bool:
    """Whether `diffdisk` is a qcow2 overlay no guest has written: no L2 table in its L1
    table (so no cluster of its own), no snapshot, no encryption."""
    header = _qcow2_header(diffdisk)
    if header is None:
        return False
    _size, crypt, l1_size, l1_off, snapshots = header
    if crypt or snapshots or l1_size > (1 << 20):
        return False
    try:
        with diffdisk.open("rb") as f:
            f.seek(l1_off)
            table = f.read(8 * l1_size)
    except OSError:
        return False
    return len(table) == 8 * l1_size and not any(table)


def pause_word(argv: Sequence[str]) -> str:
    """The pause word in qemu's -append (PAUSE_WORD, EARLY_WORD), "" when it has none."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-append":
            words = argv[i + 1].split()
            return next((w for w in (PAUSE_WORD, EARLY_WORD) if w in words), "")
    return ""


def pause_boot(argv: Sequence[str]) -> bool:
    """Whether qemu's argv boots a kernel told to pause (either pause word in -append)."""
    return bool(pause_word(argv))


def cache_dir() -> Path:
    """`$LIMA_BOOT_TEMPLATE_DIR`, else `boot` in limapy's cache directory."""
    env = os.environ.get(ENV_DIR, "").strip()
    return Path(env) if env else paths.cache_dir() / "boot"


@dataclass(frozen=True)
class Template:
    """Where one key's saved state is (or would go), and the MAC this boot's go line sets."""

    key: str
    mac: str
    early: bool = False  # paused before any disk is read: any disk will do

    @property
    def state(self) -> Path:
        return cache_dir() / f"{self.key}.state"

    def exists(self) -> bool:
        return self.state.is_file()


def _host_cpu() -> list[str]:
    """The host CPU's model name and flags (the first CPU's)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags") and key not in found:
                    found[key] = value.strip()
                if not line.strip() and found:
                    break
    except OSError:
        pass
    return [found.get("model name", ""), found.get("flags", "")]


def normalized_argv(argv: Sequence[str], inst_dir: Path) -> list[str]:
    """qemu's argv as every instance with the same machine has it: the instance's
    directory, name, ssh port, MAC and 9p host paths (none of which the guest has seen at
    the pause) replaced by placeholders."""
    here = str(inst_dir.absolute())
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "-name":
            out.append("@NAME")
            continue
        # In an option's value a comma in the path is written twice.
        arg = arg.replace(here.replace(",", ",,"), "@INST").replace(here, "@INST")
        arg = _HOSTFWD.sub(r"\1@PORT\2", arg)
        arg = _MAC.sub("mac=@MAC", arg)
        if i > 0 and argv[i - 1] == "-virtfs":
            # The tag is read when the guest loads 9p's driver, after the pause.
            arg = _VIRTFS_PATH.sub(r"\1\2=@\2", arg)
        if i > 0 and argv[i - 1] == "-display":
            arg = _VNC.sub("vnc=@VNC", arg)  # the host's side of the display
        out.append(arg)
    return out


def without_pause(argv: Sequence[str]) -> list[str]:
    """qemu's argv with the pause words taken out of -append: a boot that does not pause."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "-append":
            out[i + 1] = " ".join(w for w in out[i + 1].split()
                                  if w not in (PAUSE_WORD, EARLY_WORD))
    return out


def initrd_of(argv: Sequence[str], inst_dir: Path) -> Path:
    """The initrd qemu's argv boots (the instance's INITRD when it names none)."""
    for i in range(len(argv) - 1):
        if argv[i] == "-initrd":
            return Path(argv[i + 1])
    return inst_dir / paths.INITRD


def mac_of(argv: Sequence[str]) -> str:
    """The NIC's MAC in qemu's argv ("" when it has none)."""
    found = _MAC.search(" ".join(argv))
    return found.group(1).lower() if found else ""


def plan(argv: Sequence[str], inst_dir: Path) -> Template | None:
    """The template this pause boot loads or saves; None when it can have none (a first
    boot with another disk than the boot disk, no basedisk record, an unreadable file)."""
    from lima.drivers.images.baserecord import read_record

    word = pause_word(argv)
    if not word or "-incoming" in argv:
        return None
    early = word == EARLY_WORD
    if not early and sum(1 for a in argv if "if=virtio" in a) != 1:
        return None  # additional disks: the guest reads their partition tables at probe
    mac = mac_of(argv)
    header = _qcow2_header(inst_dir / paths.DIFFDISK)
    record = read_record(inst_dir)
    if not mac or header is None or record is None:
        return None
    qemu = suspend.file_identity(Path(argv[0]))  # its version: an upgrade replaces it
    if qemu is None:
        return None
    try:
        material = {
            "version": TEMPLATE_VERSION,
            "argv": normalized_argv(argv, inst_dir),
            "qemu": [argv[0], qemu],
            "cpu": _host_cpu(),  # what `-cpu host` (KVM) gives the guest
            "kernelRelease": os.uname().release,  # and KVM's own part of it
            "kernel": digestcache.sha256(inst_dir / paths.KERNEL, cache_dir()),
            "initrd": digestcache.sha256(initrd_of(argv, inst_dir), cache_dir()),
            "basedisk": record.sha256,
            "diskSize": header[0],
        }
    except OSError:
        return None
    blob = json.dumps(material, sort_keys=True).encode()
    return Template(hashlib.sha256(blob).hexdigest()[:32], mac, early)


def go_line(mac: str, now: float | None = None) -> bytes:
    """The line the paused initramfs waits for: the time, the MAC, 32 random bytes."""
    epoch = round(time.time() if now is None else now)
    return f"limapy-go {epoch} {mac} {secrets.token_hex(32)}\n".encode()


def _connect_serial(inst_dir: Path, deadline: float) -> socket.socket:
    """A client of qemu's serial socket (the guest's console), which qemu makes at start."""
    path = inst_dir / paths.SERIAL_SOCK
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send_go(inst_dir: Path, mac: str, sock: socket.socket | None = None,
            alive: Callable[[], bool] = lambda: True) -> bool:
    """Write the go line to the guest's console (connecting when `sock` is None) and read
    the console until the guest says it read it (True), for GO_TIMEOUT at most: QEMU
    drops console input the guest has not taken yet when the client's end closes."""
    own = sock is None
    if sock is None:
        sock = _connect_serial(inst_dir, time.monotonic() + _CONNECT_TIMEOUT)
    try:
        sock.sendall(go_line(mac))
        return wait_line(sock, GONE_ON, time.monotonic() + GO_TIMEOUT, alive)
    finally:
        if own:
            sock.close()


def wait_line(sock: socket.socket, marker: bytes, deadline: float,
              alive: Callable[[], bool]) -> bool:
    """Read the console until `marker` (True), the deadline, qemu's end or EOF."""
    seen = b""
    while time.monotonic() < deadline and alive():
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return False
        if not chunk:
            return False
        seen += chunk
        if marker in seen:
            return True
        seen = seen[-len(marker):]  # a marker split across reads is still found
    return False


def answer_reboots(inst_dir: Path, mac: str, alive: Callable[[], bool],
                   interval: float = REBOOT_POLL) -> None:
    """Until qemu ends: answer every later ready line with a go line. A reboot inside the
    guest runs the same command line, so its initramfs pauses again (the early pause
    comes before it could tell a reboot from a new boot). This follows the console's log
    (serial.log, which QEMU writes beside the socket) with a ConsoleTail, and connects to
    the console only to answer; the ready lines already there were this boot's."""
    from lima.drivers.serialwatch import ConsoleTail

    tail = ConsoleTail(inst_dir / paths.SERIAL_LOG, (READY,), interval).start()
    try:
        answered = tail.count(READY)
        while alive():
            now = tail.wait(READY, answered, interval)
            if now <= answered:
                continue
            answered = now
            try:
                read = send_go(inst_dir, mac, alive=alive)
            except OSError as exc:
                log.warning("the guest paused again (a reboot); the go line could not be "
                            "sent: %s", exc)
                continue
            log.info("the guest paused again (a reboot): %s", "let go" if read else
                     "it did not say it read the go line")
    finally:
        tail.stop()


def capture(inst_dir: Path, mac: str, tpl: Template | None, alive: Callable[[], bool]) -> str:
    """The host agent's side of a pause boot without a template: wait for the ready line,
    save the paused guest as `tpl` (when there is one), continue it and send the go line.
    What happened, for the log; never raises (the boot goes on without a template)."""
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        sock = _connect_serial(inst_dir, time.monotonic() + _CONNECT_TIMEOUT)
    except OSError as exc:
        return f"no console to wait on: {exc}"
    with sock:
        if not wait_line(sock, READY, deadline, alive):
            return "the guest did not pause (no ready line): booted without a template"
        began = time.monotonic()
        saved: Path | None = None
        why = "no template for this machine"
        if tpl is not None:
            try:
                saved = _save(inst_dir, tpl)
            except (LimaError, OSError) as exc:
                why = f"not saved: {exc}"
        paused = time.monotonic() - began
        try:
            read = send_go(inst_dir, mac, sock, alive)
        except OSError as exc:
            read, why = False, f"the go line could not be sent: {exc}"
    if not read:
        # A guest that did not take the go line is not one to copy; it goes on by itself.
        if saved is not None:
            saved.unlink(missing_ok=True)
        return f"the guest did not say it read the go line ({why})"
    if saved is None or tpl is None:
        return f"went on after the pause ({why})"
    threading.Thread(target=_commit, args=(saved, tpl), name="template-commit",
                     daemon=True).start()
    return f"saved the boot template {tpl.key} ({paused:.2f} s paused)"


def _save(inst_dir: Path, tpl: Template) -> Path:
    """Stop the guest, migrate it into a temp file beside the template, continue it.
    Returns the temp file (not yet durable: `_commit` makes it so)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = cache_dir() / f".{tpl.key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with QMPClient(inst_dir / paths.QMP_SOCK, timeout=10.0) as qmp:
        qmp.execute("stop")
        try:
            # The guest has written nothing (QEMU flushed at the stop): else its page cache
            # and file system state are this disk's, not the image's. (An early pause
            # has read no disk at all.)
            if not tpl.early and not pristine(inst_dir / paths.DIFFDISK):
                raise LimaError("the disk was written before the pause")
            qmp.execute("migrate-set-parameters", {"max-bandwidth": suspend.UNLIMITED})
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                suspend.migrate_out(qmp, fd, time.monotonic() + SAVE_TIMEOUT, SAVE_TIMEOUT)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                os.close(fd)
        finally:
            _cont(inst_dir, qmp)
    return tmp


def _cont(inst_dir: Path, qmp: QMPClient) -> None:
    """Continue the guest; once more on a new connection when the first `cont` failed."""
    try:
        qmp.execute("cont")
    except (LimaError, OSError) as exc:
        log.warning("QMP cont after the template's save failed (%s); asking again", exc)
        with QMPClient(inst_dir / paths.QMP_SOCK, timeout=10.0) as again:
            again.execute("cont")


def _commit(tmp: Path, tpl: Template) -> None:
    """Make the saved state durable, then give it its name (the commit point)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, tpl.state)
        fsync_dir(cache_dir())
        prune()
    except OSError as exc:
        log.warning("the boot template %s was not kept: %s", tpl.key, exc)
        tmp.unlink(missing_ok=True)


class TemplateRefused(LimaError):
    """QEMU could not load the template (or exited while loading it): remove it."""


def restore(inst_dir: Path, tpl: Template, alive: Callable[[], bool] = lambda: True) -> float:
    """Into the qemu just started with `-incoming defer`: load the template, continue the
    guest and send the go line. Returns the seconds it took. Raises TemplateRefused when
    QEMU refused the state, else LimaError or OSError (the template may be fine)."""
    began = time.monotonic()
    deadline = began + LOAD_TIMEOUT
    try:
        with suspend.connect_incoming(inst_dir / paths.QMP_SOCK, deadline, alive) as qmp:
            try:
                status = suspend.migrate_in(qmp, tpl.state, deadline, LOAD_TIMEOUT)
            except LimaError as exc:
                raise TemplateRefused(str(exc)) from exc
            if status != "running":
                qmp.execute("cont")
    except (LimaError, OSError) as exc:
        if not alive() and not isinstance(exc, TemplateRefused):
            raise TemplateRefused(f"qemu exited while loading it ({exc})") from exc
        raise
    if not send_go(inst_dir, tpl.mac, alive=alive):
        raise LimaError("the guest loaded from the template did not read the go line")
    with contextlib.suppress(OSError):
        os.utime(tpl.state)  # recently used: pruned last
    return time.monotonic() - began


def discard(tpl: Template) -> None:
    tpl.state.unlink(missing_ok=True)


def prune(keep: int = KEEP) -> None:
    """Keep the `keep` most recently used templates; remove temp files of dead writers."""
    root = cache_dir()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    states = []
    for entry in entries:
        if entry.name.endswith(".state"):
            with contextlib.suppress(OSError):
                states.append((entry.stat().st_mtime, entry))
        elif entry.name.endswith(".tmp"):
            parts = entry.name.split(".")
            pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
            if pid and not procs.pid_alive(pid):
                entry.unlink(missing_ok=True)
    for _, entry in sorted(states, reverse=True)[keep:]:
        entry.unlink(missing_ok=True)
