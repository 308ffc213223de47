"""`limactl apply` of a changed lima.yaml on a running tiny guest (real QEMU): the plan
changes nothing, an invalid edit leaves the VM as it was, `cpus` 1 -> 2 restarts it once and
the guest sees 2 CPUs, `--restart=stage` waits for the next start, a larger `disk` grows the
diffdisk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

EXAMPLE = REPO / "examples" / "tiny.yaml"


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    f = tmp_path / "t.yaml"
    shutil.copy(EXAMPLE, f)
    return f


def conditions(limactl: Limactl) -> dict[str, str]:
    doc = json.loads((limactl.home / "t" / "status.json").read_text())
    return {c["type"]: c["status"] for c in doc["conditions"]}


def nproc(limactl: Limactl) -> str:
    return limactl("shell", "t", "nproc").stdout.strip()


def virtual_size(disk: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                         capture_output=True, text=True, check=True).stdout
    return int(json.loads(out)["virtual-size"])


def test_plan_restart_stage_and_disk_grow(limactl: Limactl, tiny_yaml: Path) -> None:
    original = tiny_yaml.read_text()
    limactl("apply", str(tiny_yaml), timeout=300)
    [pid] = qemu_pids_for(limactl.home)
    assert nproc(limactl) == "1"
    stored = (limactl.home / "t" / "lima.yaml").read_text()
    assert (limactl.home / "t" / "lima.applied.json").is_file()

    # --dry-run and diff: the plan, exit 2, nothing touched.
    tiny_yaml.write_text(original + "cpus: 2\n")
    plan = limactl("apply", "--dry-run", str(tiny_yaml), check=False)
    assert plan.returncode == 2, plan.stderr
    assert any(line.split()[:4] == ["cpus", "1", "2", "restart"]
               for line in plan.stdout.splitlines())
    diff = limactl("diff", "t", str(tiny_yaml), "--format", "json", check=False)
    assert diff.returncode == 2
    assert json.loads(diff.stdout)["instances"][0]["verdict"] == "restart"
    assert qemu_pids_for(limactl.home) == [pid]
    assert (limactl.home / "t" / "lima.yaml").read_text() == stored

    # An invalid edit: exit 1 at file:line, the VM and its files as they were.
    tiny_yaml.write_text(original + "cpus: -1\n")
    bad = limactl("apply", str(tiny_yaml), check=False)
    assert bad.returncode == 1 and "t.yaml:" in bad.stderr and "cpus" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert qemu_pids_for(limactl.home) == [pid]
    assert (limactl.home / "t" / "lima.yaml").read_text() == stored

    # A shrink is refused the same way.
    tiny_yaml.write_text(original + "disk: 512MiB\n")
    shrink = limactl("apply", str(tiny_yaml), check=False)
    assert shrink.returncode == 1 and "shrink" in shrink.stderr
    assert qemu_pids_for(limactl.home) == [pid]

    # cpus 1 -> 2: one restart, and the guest sees it.
    tiny_yaml.write_text(original + "cpus: 2\n")
    out = limactl("apply", str(tiny_yaml), timeout=300)
    assert "restarted" in out.stdout
    assert out.stderr.count(" stopped ") == 1, out.stderr
    pids = qemu_pids_for(limactl.home)
    assert len(pids) == 1 and pids != [pid]
    assert nproc(limactl) == "2"
    assert conditions(limactl)["RestartRequired"] == "False"
    again = limactl("apply", "--dry-run", str(tiny_yaml), check=False)
    assert again.returncode == 0, again.stdout

    # --restart=stage: recorded, RestartRequired, the VM untouched until the next start.
    [pid] = pids
    tiny_yaml.write_text(original + "cpus: 1\ndisk: 2GiB\n")
    staged = limactl("apply", "--restart=stage", str(tiny_yaml), timeout=300)
    assert "restart required" in staged.stdout
    assert qemu_pids_for(limactl.home) == [pid]
    assert nproc(limactl) == "2"
    listed = json.loads(limactl("list", "--format", "json", "t").stdout)
    assert {c["type"]: c["status"] for c in listed["conditions"]}["RestartRequired"] == "True"
    disk = limactl.home / "t" / "diffdisk"
    assert virtual_size(disk) == 1 << 30
    limactl("stop", "t", timeout=120)
    limactl("start", "t", timeout=300)
    assert nproc(limactl) == "1"
    assert conditions(limactl)["RestartRequired"] == "False"
    # The disk grew at that boot (diffdisk's virtual size; tiny has no growpart).
    assert virtual_size(disk) == 2 << 30
