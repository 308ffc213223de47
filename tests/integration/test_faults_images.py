"""Image faults through the real CLI with the `build:tiny` guest: the build cache is
immutable to instances, a changed cache entry is built again, and a garbage basedisk (or
kernel) fails the apply at once, in qemu-img's (or qemu's) words, with no qemu left behind.

Every test runs on a private copy of the tiny cache entry (XDG_CACHE_HOME in tmp): the
old code hard-linked cache files into instances, and these tests write into instance
files on purpose; they must never reach the cache the other tests share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from lima.drivers.images import build
from tests.integration.conftest import Limactl, qemu_pids_for

FILES = {"image.qcow2": "basedisk", "kernel": "kernel", "initrd": "initrd"}


def facts(path: Path) -> tuple[str, int, int]:
    """What must not change: content digest, mode, size."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode), st.st_size


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy (never links) of the shared tiny build entry under a private XDG_CACHE_HOME;
    the .debs are shared read-only so a rebuild needs no mirror. Returns the entry."""
    shared = build.build_image("tiny", progress=False).image.parent  # built once if missing
    shared_root = shared.parent
    cache = tmp_path / "xdg-cache"
    root = cache / "lima" / "build"
    root.mkdir(parents=True)
    entry = root / shared.name
    shutil.copytree(shared, entry)  # copy2 per file: new inodes
    for name in ("apt-show.json",):
        if (shared_root / name).exists():
            shutil.copy2(shared_root / name, root / name)
    accel = shared_root.parent / "accel.json"
    if accel.exists():
        shutil.copy2(accel, cache / "lima" / "accel.json")
    shutil.copytree(build.debs_dir(), root / "debs", copy_function=os.link)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for name in FILES:
        assert (entry / name).stat().st_ino != (shared / name).stat().st_ino
    return entry


def test_instances_cannot_change_the_cache_and_a_changed_entry_is_rebuilt(
        limactl: Limactl, private_cache: Path) -> None:
    entry = private_cache
    limactl("create", "--name", "a", "template:tiny")
    limactl("create", "--name", "b", "template:tiny")
    a, b = limactl.home / "a", limactl.home / "b"
    cache_before = {n: facts(entry / n) for n in FILES}
    b_before = {n: facts(b / n) for n in FILES.values()}

    for name in FILES.values():  # a user (or a bug) writing through instance a's files
        path = a / name
        path.chmod(0o600)
        with path.open("ab") as f:
            f.write(b"appended through instance a")
        with path.open("r+b") as f:
            f.write(b"\xff" * 64)

    assert {n: facts(entry / n) for n in FILES} == cache_before
    assert {n: facts(b / n) for n in FILES.values()} == b_before
    assert [n for n in FILES.values() if (a / n).stat().st_nlink != 1] == []

    # A change made to the cache entry itself is detected and the entry built again.
    kernel = entry / "kernel"
    clean_kernel = cache_before["kernel"][0]
    kernel.chmod(0o644)
    with kernel.open("ab") as f:
        f.write(b"tampered in the cache")
    t0 = time.monotonic()
    out = limactl("create", "--name", "c", "template:tiny", timeout=600)
    rebuild_s = time.monotonic() - t0
    assert "changed after it was built" in out.stderr and "building it again" in out.stderr
    assert facts(limactl.home / "c" / "kernel")[0] == clean_kernel
    assert build.entry_problems(entry) == []
    assert rebuild_s < 300


def status(limactl: Limactl, name: str) -> dict[str, object]:
    rec: dict[str, object] = json.loads(limactl("list", "--format", "json", name).stdout)
    return rec


def test_garbage_basedisk_fails_at_once_in_qemu_imgs_words(
        limactl: Limactl, private_cache: Path, tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("base: template:tiny\n")
    limactl("create", str(f))
    basedisk = limactl.home / "t" / "basedisk"
    basedisk.write_bytes(os.urandom(1 << 20))  # as `head -c 1M /dev/urandom > basedisk`

    t0 = time.monotonic()
    out = limactl("apply", "--timeout", "120", str(f), check=False, timeout=180)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    assert elapsed < 10, f"{elapsed:.1f} s:\n{out.stderr}"
    assert str(basedisk) in out.stderr
    assert "Image is not in qcow2 format" in out.stderr  # qemu-img's words, shown at once
    assert "is stalled" in out.stderr and "did not reach" not in out.stderr
    assert "host agent exited" not in out.stderr
    assert "Traceback" not in out.stderr
    assert qemu_pids_for(limactl.home) == []
    rec = status(limactl, "t")
    assert rec["status"] != "Running"
    # The instance's own files are left for the user to look at or repair.
    assert basedisk.stat().st_size == 1 << 20


def test_garbage_kernel_is_refused_by_qemu_and_not_retried(
        limactl: Limactl, private_cache: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The disks are fine, so this reaches qemu, which refuses the kernel in a few ms:
    # whichever way the driver learns of it (the agent gone before ha.sock answered,
    # before qemu.pid, or while waiting for ssh), it is permanent and in qemu's words.
    monkeypatch.setenv("LIMA_QEMU_ACCEL", "tcg")  # no KVM probe: qemu runs at once
    f = tmp_path / "t.yaml"
    f.write_text("base: template:tiny\n")
    limactl("create", str(f))
    (limactl.home / "t" / "kernel").write_bytes(os.urandom(1 << 20))

    t0 = time.monotonic()
    out = limactl("apply", "--timeout", "120", str(f), check=False, timeout=180)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    assert elapsed < 15, f"{elapsed:.1f} s:\n{out.stderr}"
    stalled = [ln for ln in out.stderr.splitlines() if "is stalled" in ln]
    assert stalled and "linux kernel too old to load a ram disk" in stalled[0]
    assert "did not reach" not in out.stderr
    assert qemu_pids_for(limactl.home) == []
