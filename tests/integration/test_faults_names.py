"""`stop -f` / `delete -f` racing an `apply` on the real tiny guest, through the real CLI.

The apply holds the instance lock for one reconcile pass at a time; the forced verb records
its request, waits for the apply's current step, then kills the VM through the reconciler
under the lock. The apply must notice before its next pass, exit 1 naming who stopped it,
and never boot the VM again; afterwards no qemu or host agent of the instance may run.
(The old code rebooted the VM after the crash backoff and reported success for an
instance being deleted.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

EXAMPLE = REPO / "examples" / "tiny.yaml"


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    f = tmp_path / "t.yaml"
    shutil.copy(EXAMPLE, f)
    return f


def hostagent_pids_for(home: Path) -> list[int]:
    """Every live `limactl hostagent` started with this LIMA_HOME."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hostagent" in cmd and f"LIMA_HOME={home}".encode() in env:
            found.append(int(p.name))
    return found


def wait_for_qemu(limactl: Limactl, apply: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while not qemu_pids_for(limactl.home):
        assert apply.poll() is None, apply.communicate()
        assert time.monotonic() < deadline, "qemu never started"
        time.sleep(0.05)


def test_delete_f_interrupts_a_booting_apply(limactl: Limactl, tiny_yaml: Path) -> None:
    apply = limactl.popen("apply", str(tiny_yaml))
    try:
        wait_for_qemu(limactl, apply)
        start = time.monotonic()
        delete = limactl.popen("delete", "-f", "t")
        d_out, d_err = delete.communicate(timeout=200)
        deleted_after = time.monotonic() - start
        a_out, a_err = apply.communicate(timeout=120)
        apply_after = time.monotonic() - start
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.communicate()
    print(f"delete -f returned after {deleted_after:.1f} s, apply after {apply_after:.1f} s")
    assert delete.returncode == 0, d_err
    assert "Deleted 't'" in d_out
    assert apply.returncode == 1, (a_out, a_err)
    assert (f"instance t was deleted by `limactl delete -f` (PID {delete.pid}) while this "
            "apply ran") in a_err
    assert "t: running" not in a_out
    assert "Traceback" not in a_err + d_err
    assert qemu_pids_for(limactl.home) == []
    assert hostagent_pids_for(limactl.home) == []
    assert not (limactl.home / "t").exists()
    assert [p.name for p in limactl.home.iterdir() if not p.name.startswith("_")] == []
    request = json.loads((limactl.home / "_locks" / "t.request").read_text())
    assert request["runState"] == "absent" and request["pid"] == delete.pid
    # Nothing comes back later (the old code rebooted after a crash backoff).
    time.sleep(3)
    assert qemu_pids_for(limactl.home) == [] and not (limactl.home / "t").exists()


def test_stop_f_interrupts_a_booting_apply(limactl: Limactl, tiny_yaml: Path) -> None:
    apply = limactl.popen("apply", str(tiny_yaml))
    try:
        wait_for_qemu(limactl, apply)
        stop = limactl.popen("stop", "-f", "t")
        _, s_err = stop.communicate(timeout=200)
        a_out, a_err = apply.communicate(timeout=120)
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.communicate()
    assert stop.returncode == 0, s_err
    assert apply.returncode == 1, (a_out, a_err)
    assert (f"instance t was stopped by `limactl stop -f` (PID {stop.pid}) while this "
            "apply ran") in a_err
    assert qemu_pids_for(limactl.home) == []
    assert hostagent_pids_for(limactl.home) == []
    rec = json.loads(limactl("list", "--format", "json", "t").stdout)
    assert rec["status"] == "Stopped"
