"""Damaged and unwritable instance files on real QEMU (the tiny guest), through the real CLI:
a lima.yaml damaged after create, lost disks, a status.json that is garbage or a directory,
a full disk and a read-only LIMA_HOME. Each ends at once with a clear error (exit 1, the
file named, what to do), never a boot loop, a spin or an internal error; nothing of the
user's is lost without a word; and a running VM can always be stopped.

The full-disk and read-only cases need root (a tmpfs; a read-only bind mount in a private
mount namespace of the one limactl process) and are skipped otherwise. They use the
mount(2) and unshare(2) system calls through ctypes: no host program is started for them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    Limactl,
    kill_leftovers,
    private_home,
    qemu_pids_for,
)

EXAMPLE = REPO / "examples" / "tiny.yaml"
FAST = 10.0  # seconds: "at once", with room for a loaded 2-core machine (measured: < 1 s)
BOOT = 300


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    f = tmp_path / "t.yaml"
    shutil.copy(EXAMPLE, f)
    return f


def timed(limactl: Limactl, *args: str, timeout: float = BOOT
          ) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = limactl(*args, check=False, timeout=timeout)
    return proc, time.monotonic() - t0


def record(limactl: Limactl) -> dict[str, object]:
    rec: dict[str, object] = json.loads(limactl("list", "--json", "t").stdout)
    return rec


def qemu_alive(limactl: Limactl) -> bool:
    return bool(qemu_pids_for(limactl.home))


def no_internal_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# --- 1. a lima.yaml damaged after create ----------------------------------------------------

DAMAGE = [(b"cpus: [1,\n", "lima.yaml:2: YAML syntax error"),
          (b"\x00\x01\xff\xfe\x7fELF", "lima.yaml:1: not a text file"),
          (b"", "lima.yaml: empty document")]


def test_damaged_lima_yaml_fails_at_once_and_stop_still_works(
    limactl: Limactl, tiny_yaml: Path
) -> None:
    limactl("apply", str(tiny_yaml), timeout=BOOT)
    stored = limactl.home / "t" / "lima.yaml"
    stored.write_bytes(DAMAGE[0][0])

    # While it runs: the problem and the remedy, the VM left as it is.
    proc, took = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 1 and took < FAST, (took, proc.stderr)
    no_internal_error(proc)
    assert proc.stderr.startswith(f"{stored}:2: YAML syntax error")
    assert "instance 't' is running, but its lima.yaml is damaged" in proc.stderr
    assert "`limactl stop t` still works" in proc.stderr and "limactl delete t" in proc.stderr
    assert qemu_alive(limactl)
    rec = record(limactl)
    assert rec["status"] == "Broken"
    assert isinstance(rec["errors"], list)
    assert any(str(e).startswith(f"{stored}:2: YAML syntax error") for e in rec["errors"])

    proc, took = timed(limactl, "stop", "t", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not qemu_alive(limactl)

    # Stopped: `apply` and `start` used to boot-loop until the timeout without a word.
    for raw, problem in DAMAGE:
        stored.write_bytes(raw)
        for args in (("apply", "--timeout", "120", str(tiny_yaml)), ("start", "t")):
            proc, took = timed(limactl, *args, timeout=180)
            assert proc.returncode == 1 and took < FAST, (args, took, proc.stderr)
            no_internal_error(proc)
            # (start first says, as Lima, "Using the existing instance `t`")
            lines = [ln for ln in proc.stderr.splitlines() if "existing instance" not in ln]
            assert lines and lines[0].startswith(f"{stored.parent}/{problem}"), proc.stderr
            assert f"Fix {stored}, or start over with `limactl delete t`" in proc.stderr
            assert not qemu_alive(limactl)


# --- 2. lost disks --------------------------------------------------------------------------

def test_lost_basedisk_is_prepared_again_only_from_the_same_bytes(
    limactl: Limactl, tiny_yaml: Path
) -> None:
    inst = limactl.home / "t"
    limactl("apply", str(tiny_yaml), timeout=BOOT)
    recorded = json.loads((inst / "basedisk.json").read_text())
    limactl("stop", "t", timeout=120)

    (inst / "basedisk").unlink()
    proc, took = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 0, proc.stderr  # used to spin 10 000 passes, then exit 70
    assert f"{inst / 'basedisk'} was missing; prepared it again from build:tiny" in proc.stderr
    assert hashlib.sha256((inst / "basedisk").read_bytes()).hexdigest() == recorded["sha256"]
    assert record(limactl)["status"] == "Running"
    limactl("stop", "t", timeout=120)

    # The image now gives other bytes than the ones diffdisk was laid over: refused.
    (inst / "basedisk").unlink()
    (inst / "basedisk.json").write_text(json.dumps({**recorded, "sha256": "0" * 64}))
    proc, took = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 1 and took < FAST, (took, proc.stderr)
    no_internal_error(proc)
    assert f"{inst / 'basedisk'} is missing, and {inst / 'diffdisk'}" in proc.stderr
    assert "No image of images[] gives those bytes now" in proc.stderr
    assert not (inst / "basedisk").exists() and (inst / "diffdisk").exists()
    assert not qemu_alive(limactl)


# --- 3. status.json as garbage or a directory; then a lost diffdisk on that instance --------

@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Limactl, Path]]:
    """A LIMA_HOME and lima.yaml (`t`) for the status.json test and the lost-diffdisk test
    after it, which goes on with the instance the first leaves running."""
    f = tmp_path_factory.mktemp("faults-files") / "t.yaml"
    shutil.copy(EXAMPLE, f)
    with private_home() as limactl:
        yield limactl, f


def test_unusable_status_json_is_rebuilt_from_facts(shared: tuple[Limactl, Path]) -> None:
    limactl, tiny_yaml = shared
    inst = limactl.home / "t"
    assert not inst.exists()
    limactl("apply", str(tiny_yaml), timeout=BOOT)
    status = inst / "status.json"
    status.unlink()
    status.mkdir()
    (status / "someone's file").write_text("keep")

    proc, _ = timed(limactl, "stop", "t", timeout=120)
    assert proc.returncode == 0, proc.stderr  # used to exit 70 with the VM still running
    assert not qemu_alive(limactl)
    assert f"{status}: Is a directory; rebuilding the status from facts" in proc.stderr
    (aside,) = [p for p in inst.iterdir() if p.name.startswith("status.json.aside-")]
    assert (aside / "someone's file").read_text() == "keep"
    assert f"moved it aside to {aside}" in proc.stderr
    assert json.loads(status.read_text())["phase"] == "stopped"

    status.write_bytes(b"\xff\xfe{\x80 not json")
    proc, _ = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 0, proc.stderr
    assert "t: running" in proc.stdout
    assert json.loads(status.read_text())["phase"] == "running"


def test_lost_diffdisk_is_reported_never_made_blank(shared: tuple[Limactl, Path]) -> None:
    # (After the status.json test, whose instance it takes over running: a boot less.)
    limactl, tiny_yaml = shared
    inst = limactl.home / "t"
    if not qemu_alive(limactl):
        print("the instance does not run (alone, or after a failure): applying it")
        limactl("apply", str(tiny_yaml), timeout=BOOT)
    assert record(limactl)["status"] == "Running"
    (inst / "diffdisk").unlink()

    proc, took = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 1 and took < FAST, (took, proc.stderr)
    no_internal_error(proc)
    assert f"{inst / 'diffdisk'} is missing: the disk of instance 't'" in proc.stderr
    assert "still has the deleted disk open" in proc.stderr
    assert not (inst / "diffdisk").exists()
    assert qemu_alive(limactl)  # the data still lives in the running qemu: left alone

    proc, _ = timed(limactl, "stop", "t", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not qemu_alive(limactl)

    for args in (("apply", str(tiny_yaml)), ("start", "t")):
        proc, took = timed(limactl, *args)
        assert proc.returncode == 1 and took < FAST, (args, took, proc.stderr)
        assert "the instance has booted before" in proc.stderr
        assert "`limactl delete t`" in proc.stderr
        assert not (inst / "diffdisk").exists()
        assert not qemu_alive(limactl)


# --- 4. a full disk and a read-only LIMA_HOME -------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2

# Runs limactl with LIMA_HOME read-only for this one process: a private mount namespace
# (propagation cut first, so nothing leaks to the host), LIMA_HOME bound onto itself and
# remounted read-only. The VM and its host agent keep writing through their own mounts.
READ_ONLY_LIMACTL = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
def ok(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
home = os.environ["LIMA_HOME"].encode()
CLONE_NEWNS, MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 1, 32, 4096, \
    16384, 1 << 18
ok(libc.unshare(CLONE_NEWNS))
ok(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None))
ok(libc.mount(home, home, None, MS_BIND, None))
ok(libc.mount(None, home, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None))
sys.argv = ["limactl", *sys.argv[1:]]
from lima.cli import main
main()
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def read_only(limactl: Limactl, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", READ_ONLY_LIMACTL, *args],
                          env=limactl.env(), capture_output=True, text=True, timeout=180,
                          cwd=REPO)
    return proc, time.monotonic() - t0


@needs_root
def test_read_only_lima_home_stop_still_stops(limactl: Limactl, tiny_yaml: Path) -> None:
    limactl("apply", str(tiny_yaml), timeout=BOOT)
    before = (limactl.home / "t" / "status.json").read_text()

    proc, took = read_only(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 1 and took < FAST, (took, proc.stderr)
    no_internal_error(proc)
    assert f"cannot write {limactl.home}/" in proc.stderr
    assert "Read-only file system" in proc.stderr

    proc, took = read_only(limactl, "stop", "t")
    no_internal_error(proc)
    assert not qemu_alive(limactl)  # used to exit 70 with the VM still running
    assert proc.returncode == 1, proc.stderr
    status = limactl.home / "t" / "status.json"
    assert (
        f"instance 't' is stopped, but its status was not recorded: cannot write {status}:"
        " Read-only file system" in proc.stderr
    )
    assert status.read_text() == before  # nothing half written
    # Writable again: the facts win.
    assert record(limactl)["status"] == "Stopped"
    assert limactl("stop", "t").returncode == 0
    assert json.loads(status.read_text())["phase"] == "stopped"


@pytest.fixture
def small_home(limactl: Limactl) -> Iterator[Path]:
    """LIMA_HOME on a 64 MiB tmpfs (enough for the tiny guest), unmounted afterwards."""
    home = str(limactl.home).encode()
    if _libc.mount(b"tmpfs", home, b"tmpfs", 0, b"size=64m,mode=0700") != 0:
        e = ctypes.get_errno()
        pytest.skip(f"cannot mount a tmpfs: {os.strerror(e)}")
    try:
        yield limactl.home
    finally:
        kill_leftovers(limactl.home)
        _libc.umount2(home, MNT_DETACH)


def fill(home: Path) -> None:
    with (home / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@needs_root
def test_full_disk_is_a_clear_error_and_stop_still_stops(
    limactl: Limactl, small_home: Path, tiny_yaml: Path
) -> None:
    limactl("apply", str(tiny_yaml), timeout=BOOT)
    fill(small_home)

    proc, took = timed(limactl, "apply", str(tiny_yaml))
    assert proc.returncode == 1 and took < FAST, (took, proc.stderr)
    no_internal_error(proc)
    assert f"cannot write {small_home}/" in proc.stderr
    assert "No space left on device" in proc.stderr

    proc, took = timed(limactl, "stop", "t", timeout=120)
    no_internal_error(proc)
    assert not qemu_alive(limactl)  # used to exit 70 with the VM still running
    # Stopping frees a few pages (pid files, sockets): the status may then fit, or not.
    if proc.returncode != 0:
        assert proc.returncode == 1
        assert "is stopped, but its status was not recorded: cannot write " in proc.stderr
        assert "No space left on device" in proc.stderr
    (small_home / "filler").unlink()
    assert record(limactl)["status"] == "Stopped"
