"""The lifecycle on real QEMU with the fast `build:tiny` guest, through the real CLI:
apply, shell, ssh -F, stop, start again, delete; crash recovery; concurrent applies.

The concurrent applies' instance is then the one whose qemu is killed (a boot less); the
kill test boots it itself when it runs alone or after a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, private_home, qemu_pids_for

EXAMPLE = REPO / "examples" / "tiny.yaml"


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """examples/tiny.yaml under the instance name `t`."""
    f = tmp_path / "t.yaml"
    shutil.copy(EXAMPLE, f)
    return f


def record(limactl: Limactl, name: str = "t") -> dict[str, object]:
    out = limactl("list", "--format", "json", name).stdout
    rec: dict[str, object] = json.loads(out)
    return rec


def status_json(home: Path, name: str = "t") -> dict[str, object]:
    data: dict[str, object] = json.loads((home / name / "status.json").read_text())
    return data


def test_apply_shell_stop_apply_delete(limactl: Limactl, tiny_yaml: Path) -> None:
    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "t: running" in out.stdout
    rec = record(limactl)
    assert rec["status"] == "Running"
    assert rec["phase"] == "running"
    assert isinstance(rec["sshLocalPort"], int) and rec["sshLocalPort"] > 0
    first_iid = status_json(limactl.home)["iid"]

    uname = limactl("shell", "t", "uname", "-a")
    assert uname.stdout.startswith("Linux lima-t ")
    marker = limactl("shell", "t", "cat", "/run/limapy-tiny-marker")
    assert "is provisioned" in marker.stdout

    ssh_config = limactl.home / "t" / "ssh.config"
    ssh = subprocess.run(["ssh", "-F", str(ssh_config), "lima-t", "true"],
                         capture_output=True, text=True, timeout=60)
    assert ssh.returncode == 0, ssh.stderr
    assert "unchanged" in limactl("apply", str(tiny_yaml)).stdout

    # A changed spec's plan is printed, and the running instance is left as it was.
    original = tiny_yaml.read_text()
    tiny_yaml.write_text(original + "cpus: 2\n")
    changed = limactl("apply", "--dry-run", str(tiny_yaml), check=False)
    assert changed.returncode == 2 and "restart" in changed.stdout
    assert record(limactl)["status"] == "Running"
    assert record(limactl)["cpus"] == 1
    assert status_json(limactl.home)["iid"] == first_iid
    # An invalid spec fails with file:line and touches nothing.
    tiny_yaml.write_text(original + "cpus: -1\n")
    bad = limactl("apply", str(tiny_yaml), check=False)
    assert bad.returncode == 1
    assert "t.yaml:" in bad.stderr and "cpus" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert record(limactl)["status"] == "Running"
    assert status_json(limactl.home)["iid"] == first_iid
    tiny_yaml.write_text(original)

    limactl("stop", "t", timeout=120)
    assert record(limactl)["status"] == "Stopped"
    assert qemu_pids_for(limactl.home) == []
    assert not (limactl.home / "t" / "ha.pid").exists()

    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "t: running" in out.stdout
    assert record(limactl)["status"] == "Running"
    assert status_json(limactl.home)["iid"] != first_iid
    assert len(qemu_pids_for(limactl.home)) == 1

    refused = limactl("delete", "t", check=False)
    assert refused.returncode == 1 and "running" in refused.stderr
    limactl("delete", "-f", "t", timeout=120)
    assert not (limactl.home / "t").exists()
    assert qemu_pids_for(limactl.home) == []


def test_start_stop_by_name(limactl: Limactl, tiny_yaml: Path) -> None:
    limactl("create", str(tiny_yaml))
    assert record(limactl)["status"] == "Stopped"
    limactl("start", "t", timeout=300)
    assert record(limactl)["status"] == "Running"
    limactl("stop", "-f", "t", timeout=60)
    assert record(limactl)["status"] == "Stopped"
    assert qemu_pids_for(limactl.home) == []


def test_kill_apply_mid_boot_then_apply_converges(limactl: Limactl, tiny_yaml: Path) -> None:
    proc = limactl.popen("apply", str(tiny_yaml))
    try:
        deadline = time.monotonic() + 120
        while not (limactl.home / "t" / "qemu.pid").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "qemu never started"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate()
    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "t: running" in out.stdout or "t: unchanged" in out.stdout
    assert record(limactl)["status"] == "Running"
    assert len(qemu_pids_for(limactl.home)) == 1


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Limactl, Path]]:
    """A LIMA_HOME and lima.yaml (`t`) for the two tests below, in file order."""
    f = tmp_path_factory.mktemp("lifecycle") / "t.yaml"
    shutil.copy(EXAMPLE, f)
    with private_home() as limactl:
        yield limactl, f


def test_concurrent_applies_boot_once(shared: tuple[Limactl, Path]) -> None:
    limactl, tiny_yaml = shared
    assert not (limactl.home / "t").exists()
    procs = [limactl.popen("apply", str(tiny_yaml)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    verdicts = sorted(o[0].strip() for o in outs)
    assert verdicts == ["t: running", "t: unchanged"], outs
    assert len(qemu_pids_for(limactl.home)) == 1


def test_kill_qemu_then_apply_recovers(shared: tuple[Limactl, Path]) -> None:
    limactl, tiny_yaml = shared  # running after the concurrent applies
    if not qemu_pids_for(limactl.home):
        print("the instance does not run (alone, or after a failure): applying it")
        limactl("apply", str(tiny_yaml), timeout=300)
    assert record(limactl)["status"] == "Running"
    qemu = int((limactl.home / "t" / "qemu.pid").read_text())
    os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while record(limactl)["status"] == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert record(limactl)["status"] in ("Broken", "Stopped")
    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "t: running" in out.stdout
    assert record(limactl)["status"] == "Running"
    assert len(qemu_pids_for(limactl.home)) == 1
