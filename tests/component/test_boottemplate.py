"""Boot templates (lima.drivers.boottemplate): which disks are pristine, what the key
covers, the go line, the console protocol and the cache's pruning."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lima import paths
from lima.drivers import boottemplate as bt

pytestmark = pytest.mark.component

MAC = "52:55:55:12:34:56"


def _qcow2(path: Path, size: str = "1G") -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)


def test_a_new_overlay_is_pristine_and_a_written_one_is_not(tmp_path: Path) -> None:
    disk = tmp_path / "diffdisk"
    _qcow2(disk)
    assert bt.pristine(disk)
    raw = tmp_path / "raw"
    with raw.open("wb") as f:
        f.truncate(1 << 30)
        f.seek(1 << 20)
        f.write(b"\x5a" * 4096)  # one block a guest wrote
    written = tmp_path / "written"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(written)],
                   check=True)
    assert not bt.pristine(written)
    allocated = tmp_path / "allocated"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata",
                    str(allocated), "64M"], check=True)
    assert not bt.pristine(allocated)


def test_a_resized_overlay_is_still_pristine(tmp_path: Path) -> None:
    disk = tmp_path / "diffdisk"
    _qcow2(disk)
    subprocess.run(["qemu-img", "resize", "-q", str(disk), "20G"], check=True)
    assert bt.pristine(disk)


def test_raw_missing_and_snapshotted_disks_are_not_pristine(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 65536)
    assert not bt.pristine(raw)
    assert not bt.pristine(tmp_path / "absent")
    disk = tmp_path / "snap"
    _qcow2(disk)
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(disk)], check=True)
    assert not bt.pristine(disk)


def test_a_header_pointing_past_the_end_is_not_pristine(tmp_path: Path) -> None:
    disk = tmp_path / "diffdisk"
    _qcow2(disk)
    data = bytearray(disk.read_bytes())
    struct.pack_into(">Q", data, 40, 1 << 40)  # l1_table_offset far beyond the file
    disk.write_bytes(bytes(data))
    assert not bt.pristine(disk)


def _argv(inst: Path, *, port: int = 60022, mac: str = MAC, name: str = "one",
          mem: str = "2048", cmdline: str = "root=LABEL=x console=ttyS0 limapy.pause",
          extra: tuple[str, ...] = ()) -> list[str]:
    return ["/usr/bin/qemu-system-x86_64", "-name", f"lima-{name}", "-m", mem,
            "-kernel", str(inst / "kernel"), "-initrd", str(inst / "initrd"),
            "-append", cmdline,
            "-drive", f"file={inst / 'diffdisk'},format=qcow2,if=virtio,discard=on",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", f"virtio-net-pci,netdev=net0,mac={mac},romfile=",
            *extra, "-pidfile", str(inst / "qemu.pid")]


def _instance(root: Path, name: str, *, kernel: bytes = b"kernel", size: str = "10G") -> Path:
    inst = root / name
    inst.mkdir(parents=True)
    (inst / "kernel").write_bytes(kernel)
    (inst / "initrd").write_bytes(b"initrd")
    _qcow2(inst / "diffdisk", size)
    (inst / paths.BASEDISK_RECORD).write_text(
        json.dumps({"version": 1, "sha256": "ab" * 32, "size": 123}))
    return inst


def test_two_instances_of_one_machine_share_a_key(tmp_path: Path) -> None:
    a = _instance(tmp_path, "a")
    b = _instance(tmp_path, "b")
    ta = bt.plan(_argv(a), a)
    tb = bt.plan(_argv(b, port=61000, mac="52:55:55:ab:cd:ef", name="two"), b)
    assert ta is not None and tb is not None
    assert ta.key == tb.key
    assert (ta.mac, tb.mac) == (MAC, "52:55:55:ab:cd:ef")


@pytest.mark.parametrize("change", ["memory", "cmdline", "kernel", "disk size", "device",
                                    "basedisk"])
def test_what_the_guest_has_seen_changes_the_key(tmp_path: Path, change: str) -> None:
    a = _instance(tmp_path, "a")
    b = _instance(tmp_path, "b", kernel=b"other kernel" if change == "kernel" else b"kernel",
                  size="20G" if change == "disk size" else "10G")
    if change == "basedisk":
        (b / paths.BASEDISK_RECORD).write_text(
            json.dumps({"version": 1, "sha256": "cd" * 32, "size": 123}))
    argv_b = _argv(b, mem="4096" if change == "memory" else "2048",
                   cmdline="root=LABEL=x console=ttyS0 quiet limapy.pause"
                   if change == "cmdline" else "root=LABEL=x console=ttyS0 limapy.pause",
                   extra=("-device", "virtio-rng-pci") if change == "device" else ())
    ta, tb = bt.plan(_argv(a), a), bt.plan(argv_b, b)
    assert ta is not None and tb is not None
    assert ta.key != tb.key


def test_9p_host_paths_and_tags_are_not_part_of_the_key(tmp_path: Path) -> None:
    """The guest reads a share's tag when it loads 9p's driver, after the pause; how many
    shares there are (devices on its PCI bus) it sees before."""
    a = _instance(tmp_path, "a")
    b = _instance(tmp_path, "b")
    share = "local,path={},mount_tag={},security_model=none,id=lima-0"
    ta = bt.plan(_argv(a, extra=("-virtfs", share.format("/home/x", "abc"))), a)
    tb = bt.plan(_argv(b, extra=("-virtfs", share.format("/srv/a,,b", "def"))), b)
    tc = bt.plan(_argv(b, extra=("-virtfs", share.format("/srv", "x"),
                                 "-virtfs", share.format("/tmp", "y"))), b)
    assert ta is not None and tb is not None and tc is not None
    assert ta.key == tb.key != tc.key


def test_keys_from_real_argvs_match_across_instances(tmp_path: Path) -> None:
    """qemu_argv() for two instances of one spec (VNC display, a comma in the directory's
    path, another ssh port): one key; another `cpus`: another key."""
    from lima.drivers.qemu import qemu_argv
    from tests.unit.test_qemu_argv import BIN, HOST, make_spec

    keys = []
    for parent, name, port, cpus in (("p", "one", 60022, 2), ("q,r", "two", 61033, 2),
                                     ("s", "three", 62022, 4)):
        inst = _instance(tmp_path / parent, name)
        (inst / "kernel.cmdline").write_text("root=LABEL=x limapy.pausable\n")
        spec = make_spec(name=name, cpus=cpus, video_display="vnc",
                         video_vnc_display=f"127.0.0.1:{port % 100},to=99")
        argv = qemu_argv(spec, inst, ssh_port=port, accel="tcg", binary=BIN, host=HOST,
                         pause=bt.PAUSE_WORD)
        tpl = bt.plan(argv, inst)
        assert tpl is not None, argv
        keys.append(tpl.key)
    assert keys[0] == keys[1] != keys[2]


def test_without_pause_drops_only_the_word() -> None:
    argv = ["q", "-append", "root=x limapy.pausable limapy.pause quiet", "-m", "1"]
    assert bt.without_pause(argv) == ["q", "-append", "root=x limapy.pausable quiet",
                                      "-m", "1"]
    assert not bt.pause_boot(bt.without_pause(argv))
    early = ["q", "-append", "limapy.pausable.early limapy.pause.early quiet"]
    assert bt.without_pause(early) == ["q", "-append", "limapy.pausable.early quiet"]


def test_the_key_covers_the_bytes_of_the_initrd_qemu_boots(tmp_path: Path) -> None:
    """An early pause boots initrd.early when the image has one: its bytes are in the key,
    not the initrd's, which that boot does not read."""
    a = _instance(tmp_path, "a")
    b = _instance(tmp_path, "b")
    (a / paths.INITRD_EARLY).write_bytes(b"initrd and a copy")
    (b / paths.INITRD_EARLY).write_bytes(b"initrd and another copy")
    cmdline = "root=LABEL=x limapy.pause.early"

    def early(inst: Path) -> list[str]:
        argv = _argv(inst, cmdline=cmdline)
        argv[argv.index("-initrd") + 1] = str(inst / paths.INITRD_EARLY)
        return argv

    ta, tb = bt.plan(early(a), a), bt.plan(early(b), b)
    assert ta is not None and tb is not None and ta.key != tb.key
    (b / paths.INITRD_EARLY).write_bytes(b"initrd and a copy")
    tb = bt.plan(early(b), b)
    assert tb is not None and ta.key == tb.key
    (b / "initrd").write_bytes(b"another initrd")  # not what this boot reads
    tb = bt.plan(early(b), b)
    assert tb is not None and ta.key == tb.key


def test_an_early_pause_has_its_own_key_and_any_disks(tmp_path: Path) -> None:
    """The early word: another key than the first boot's, and data disks allowed (the
    pause comes before any disk is read)."""
    a = _instance(tmp_path, "a")
    first = bt.plan(_argv(a), a)
    early = bt.plan(_argv(a, cmdline="root=LABEL=x limapy.pause.early"), a)
    assert first is not None and early is not None
    assert early.early and not first.early and early.key != first.key
    more = ("-drive", f"file={tmp_path / 'data'},format=raw,if=virtio")
    with_disk = bt.plan(_argv(a, cmdline="root=LABEL=x limapy.pause.early", extra=more), a)
    assert with_disk is not None and with_disk.early and with_disk.key != early.key


def test_no_template_without_the_word_a_record_or_with_more_disks(tmp_path: Path) -> None:
    a = _instance(tmp_path, "a")
    assert bt.plan(_argv(a, cmdline="root=LABEL=x"), a) is None
    more = ("-drive", f"file={tmp_path / 'data'},format=raw,if=virtio")
    assert bt.plan(_argv(a, extra=more), a) is None
    assert bt.plan([*_argv(a), "-incoming", "defer"], a) is None
    (a / paths.BASEDISK_RECORD).unlink()
    assert bt.plan(_argv(a), a) is None


def test_pause_boot_reads_the_append_words() -> None:
    assert bt.pause_boot(["q", "-append", "a limapy.pause b"])
    assert bt.pause_word(["q", "-append", "a limapy.pause.early"]) == bt.EARLY_WORD
    assert bt.pause_word(["q", "-append", "limapy.pause"]) == bt.PAUSE_WORD
    assert not bt.pause_boot(["q", "-append", "a limapy.pauses"])
    assert not bt.pause_boot(["q", "-append", "a limapy.pausable limapy.pausable.early"])
    assert not bt.pause_boot(["q", "limapy.pause"])


def test_the_go_line_carries_time_mac_and_fresh_randomness() -> None:
    one = bt.go_line(MAC, now=1700000000.6).decode()
    two = bt.go_line(MAC, now=1700000000.6).decode()
    m = re.fullmatch(r"limapy-go 1700000001 (\S+) ([0-9a-f]{64})\n", one)
    assert m is not None and m.group(1) == MAC
    assert one != two  # a new seed each time


def test_enabled_by_default_and_off_by_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(bt.ENV_SWITCH, raising=False)
    assert bt.enabled()
    for off in ("0", "off", "false", "NO"):
        monkeypatch.setenv(bt.ENV_SWITCH, off)
        assert not bt.enabled()


def test_wait_line_finds_a_marker_split_across_reads() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def talk() -> None:
            theirs.sendall(b"boot noise\nlimapy-pa")
            time.sleep(0.1)
            theirs.sendall(b"use: ready\r\n")

        threading.Thread(target=talk).start()
        assert bt.wait_line(ours, bt.READY, time.monotonic() + 5, lambda: True)


def test_wait_line_gives_up_at_eof_and_when_qemu_is_gone() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.sendall(b"no marker here")
        theirs.close()
        assert not bt.wait_line(ours, bt.READY, time.monotonic() + 5, lambda: True)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        began = time.monotonic()
        assert not bt.wait_line(ours, bt.READY, began + 30, lambda: False)
        assert time.monotonic() - began < 1


def test_prune_keeps_the_most_recently_used(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bt.ENV_DIR, str(tmp_path))
    for i in range(6):
        f = tmp_path / f"k{i}.state"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    dead = tmp_path / ".k9.999999999.ab.tmp"
    dead.write_bytes(b"half")
    live = tmp_path / f".k8.{os.getpid()}.ab.tmp"
    live.write_bytes(b"being written")
    bt.prune(keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["k3.state", "k4.state", "k5.state", live.name])


# --- capture and restore against a real qemu (its QMP) and a console the test plays ---

QEMU = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "64", "-nodefaults",
        "-display", "none"]


class Console:
    """The guest's side of the console protocol on serial.sock: the ready line, then the
    go line read (and acknowledged unless `ack` is off), as build:debian-12's initramfs."""

    def __init__(self, inst: Path, *, ready: bool = True, ack: bool = True) -> None:
        self.lines: list[str] = []
        self.ready, self.ack = ready, ack
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(inst / paths.SERIAL_SOCK))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"[    3.1] EXT4-fs (vda): mounted\r\n")
                if not self.ready:
                    continue
                conn.sendall(b"limapy-pause: ready\r\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.lines.append(data.decode())
                if self.ack:
                    conn.sendall(b"limapy-pause: go\r\n")
                while conn.recv(4096):
                    pass

    def close(self) -> None:
        self.server.close()


def _qemu(inst: Path, *extra: str) -> subprocess.Popen[bytes]:
    (inst / paths.QMP_SOCK).unlink(missing_ok=True)
    proc = subprocess.Popen([*QEMU, "-qmp", f"unix:{inst / paths.QMP_SOCK},server=on,wait=off",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A guest's ready line comes seconds after qemu made its sockets; this one's at once.
    if not _wait_for((inst / paths.QMP_SOCK).exists, 10):
        proc.kill()
        proc.wait()
        raise AssertionError("qemu made no QMP socket")
    return proc


def _status(inst: Path) -> str:
    from lima.drivers.qmp import QMPClient

    with QMPClient(inst / paths.QMP_SOCK) as qmp:
        reply = qmp.execute("query-status")
    assert isinstance(reply, dict)
    return str(reply["status"])


@pytest.fixture
def inst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(bt.ENV_DIR, str(tmp_path / "templates"))
    d = tmp_path / "i"
    d.mkdir()
    _qcow2(d / paths.DIFFDISK)  # the capture checks it is still the image's bytes
    return d


def _wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_capture_saves_the_paused_guest_and_restore_loads_it(inst: Path) -> None:
    console = Console(inst)
    tpl = bt.Template("k" * 32, MAC)
    _saved(inst, tpl)
    assert console.lines and console.lines[0].startswith("limapy-go ")
    assert console.lines[0].split()[2] == MAC
    assert not [p for p in tpl.state.parent.iterdir() if p.name.endswith(".tmp")]
    second = _qemu(inst, "-incoming", "defer")
    try:
        took = bt.restore(inst, tpl)
        assert took > 0
        assert _status(inst) == "running"
        assert len(console.lines) == 2 and console.lines[1] != console.lines[0]
        assert tpl.exists()  # kept for the next first boot
    finally:
        second.kill()
        second.wait()
        console.close()


def _saved(inst: Path, tpl: bt.Template) -> None:
    """`tpl` captured from a qemu that is gone afterwards."""
    first = _qemu(inst)
    try:
        said = bt.capture(inst, MAC, tpl, lambda: first.poll() is None)
        assert said.startswith(f"saved the boot template {tpl.key}"), said
        assert _wait_for(tpl.exists), "the template was not committed"
        assert _status(inst) == "running"  # continued after the save
    finally:
        first.kill()
        first.wait()


def test_a_template_another_machine_cannot_load_is_an_error(inst: Path) -> None:
    console = Console(inst)
    tpl = bt.Template("m" * 32, MAC)
    _saved(inst, tpl)
    other = _qemu(inst, "-m", "128", "-incoming", "defer")
    try:
        with pytest.raises(bt.TemplateRefused):  # QEMU refuses the state (and may exit)
            bt.restore(inst, tpl, lambda: other.poll() is None)
    finally:
        other.kill()
        other.wait()
        console.close()


def test_a_guest_that_does_not_pause_boots_without_a_template(inst: Path) -> None:
    console = Console(inst, ready=False)
    tpl = bt.Template("n" * 32, MAC)
    try:
        said = bt.capture(inst, MAC, tpl, lambda: True)
        assert "did not pause" in said
        assert not tpl.exists()
    finally:
        console.close()


def test_no_template_is_kept_when_the_guest_does_not_take_the_go_line(
        inst: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bt, "GO_TIMEOUT", 0.5)
    console = Console(inst, ack=False)
    tpl = bt.Template("p" * 32, MAC)
    first = _qemu(inst)
    try:
        said = bt.capture(inst, MAC, tpl, lambda: first.poll() is None)
        assert "did not say it read the go line" in said
        time.sleep(0.3)
        assert not tpl.exists()
        assert not list(tpl.state.parent.glob(".*.tmp"))
        assert _status(inst) == "running"
    finally:
        first.kill()
        first.wait()
        console.close()


def test_a_guest_left_paused_by_a_killed_capture_is_continued_on_attach(inst: Path) -> None:
    """The agent died between QMP `stop` and `cont`: the next one, attaching to a first
    boot's qemu, continues it; a paused qemu of another boot is left alone."""
    from lima.drivers import suspend
    from lima.drivers.qmp import QMPClient

    first = _qemu(inst)
    try:
        with QMPClient(inst / paths.QMP_SOCK) as qmp:
            qmp.execute("stop")
        assert not suspend.continue_interrupted(inst)
        assert _status(inst) == "paused"
        assert suspend.continue_interrupted(inst, pause_boot=True)
        assert _status(inst) == "running"
    finally:
        first.kill()
        first.wait()


def _written_disk(inst: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    with raw.open("wb") as f:
        f.truncate(1 << 30)
        f.write(b"\x5a" * 4096)
    (inst / paths.DIFFDISK).unlink()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(inst / paths.DIFFDISK)], check=True)


def test_an_early_template_is_saved_from_any_disk(inst: Path, tmp_path: Path) -> None:
    """The early pause comes before any disk is read: a disk of its own does not matter."""
    _written_disk(inst, tmp_path)
    console = Console(inst)
    try:
        _saved(inst, bt.Template("e" * 32, MAC, early=True))
    finally:
        console.close()


def test_no_template_is_saved_from_a_disk_already_written(inst: Path, tmp_path: Path) -> None:
    _written_disk(inst, tmp_path)
    console = Console(inst)
    tpl = bt.Template("w" * 32, MAC)
    first = _qemu(inst)
    try:
        said = bt.capture(inst, MAC, tpl, lambda: first.poll() is None)
        assert "not saved: the disk was written before the pause" in said, said
        assert not tpl.exists() and not list(tpl.state.parent.glob(".*.tmp"))
        assert _status(inst) == "running"  # let go all the same
        assert console.lines and console.lines[0].startswith("limapy-go ")
    finally:
        first.kill()
        first.wait()
        console.close()


def test_a_qemu_that_exits_during_the_load_refuses_the_template(inst: Path) -> None:
    tpl = bt.Template("x" * 32, MAC)
    tpl.state.parent.mkdir(parents=True, exist_ok=True)
    tpl.state.write_bytes(b"not a migration stream")
    dead = subprocess.Popen(["true"])
    dead.wait()
    began = time.monotonic()
    with pytest.raises(bt.TemplateRefused):
        bt.restore(inst, tpl, lambda: dead.poll() is None)
    assert time.monotonic() - began < 5  # not the whole load timeout


def test_which_boots_may_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the import: a first boot, on its own boot disk. Early: any other boot. Neither
    when attaching, with virtiofs, or templates off."""
    from lima.drivers.instance import _pause_word
    from lima.schemas.spec import Mount
    from tests.unit.test_qemu_argv import make_spec

    monkeypatch.delenv(bt.ENV_SWITCH, raising=False)
    inst = _instance(tmp_path, "a")
    spec = make_spec()
    assert _pause_word(inst, spec, False, []) == bt.PAUSE_WORD
    assert _pause_word(inst, spec, True, []) == ""  # attaching: no boot at all
    assert _pause_word(inst, spec, False, [tmp_path / "data"]) == bt.EARLY_WORD
    share = Mount(location=str(tmp_path), mount_point="/mnt")
    virtiofs = make_spec(mount_type="virtiofs", mounts=(share,))
    assert _pause_word(inst, virtiofs, False, []) == ""
    assert _pause_word(inst, make_spec(mount_type="9p", mounts=(share,)), False, []) \
        == bt.PAUSE_WORD
    monkeypatch.setenv(bt.ENV_SWITCH, "0")
    assert _pause_word(inst, spec, False, []) == ""
    monkeypatch.delenv(bt.ENV_SWITCH)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata",
                    str(inst / paths.DIFFDISK), "64M"], check=True)
    assert _pause_word(inst, spec, False, []) == bt.EARLY_WORD  # a disk of its own
    assert _pause_word(inst, virtiofs, False, []) == ""


def test_wait_line_finds_a_marker_followed_by_much_more_output() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"x" * 100 + bt.GONE_ON + b"\r\n" + b"y" * 20000)
        assert bt.wait_line(ours, bt.GONE_ON, time.monotonic() + 5, lambda: True)


def test_a_qemu_left_loading_a_template_is_ended_on_attach(inst: Path) -> None:
    """The agent died while its qemu waited for the template (`inmigrate`): the guest never
    ran and nothing will load it now, so the next agent, attaching, ends that qemu and
    exits with the reason (the next start boots afresh) instead of waiting on it."""
    from lima.drivers import procs, suspend
    from lima.drivers.hostagent.daemon import HostAgent
    from tests.component.test_hostagent import FakeGuest

    stuck = _qemu(inst, "-incoming", "defer", "-pidfile", str(inst / paths.QEMU_PID))
    try:
        assert _wait_for(lambda: procs.qemu_pid(inst) == stuck.pid)
        with pytest.raises(suspend.LoadCutShort):
            suspend.continue_interrupted(inst, pause_boot=True)
        agent = HostAgent(inst, ssh_port=1, qemu_argv=["unused"], guest=FakeGuest([]),
                          attach=True)
        assert agent.run(install_signals=False) == 1
        assert stuck.wait(timeout=10) is not None  # ended, by its pid
        assert "the guest never ran" in (inst / paths.HA_STDOUT).read_text()
    finally:
        if stuck.poll() is None:
            stuck.kill()
        stuck.wait()


def test_each_reboots_pause_is_answered_from_the_consoles_log(inst: Path) -> None:
    """A reboot inside the guest pauses again: every ready line written to serial.log
    after the watch began gets one go line; one already there does not."""
    log_path = inst / paths.SERIAL_LOG
    log_path.write_bytes(b"limapy-pause: ready\r\nlimapy-pause: go\r\n")  # this boot's
    console = Console(inst)
    running = threading.Event()
    running.set()
    watch = threading.Thread(target=bt.answer_reboots,
                             args=(inst, MAC, running.is_set, 0.05), daemon=True)
    watch.start()
    try:
        time.sleep(0.3)
        assert console.lines == []
        for n in (1, 2):
            with log_path.open("ab") as f:
                f.write(b"reboot: Restarting system\r\n[    0.0] Linux version\r\n"
                        b"limapy-pause: ready\r\n")
            assert _wait_for(lambda n=n: len(console.lines) == n, 10), console.lines
            assert console.lines[-1].split()[2] == MAC
        time.sleep(0.3)
        assert len(console.lines) == 2
    finally:
        running.clear()
        watch.join(5)
        console.close()
    assert not watch.is_alive()  # ends with qemu
