"""A running `limactl snapshot apply` into a VM of another shape, on the tiny guest: after
`limactl edit --cpus 2 --start` the snapshot taken with 1 cpu is refused before anything is
paused (the guest runs on, untouched), and loads again once the instance is back to 1 cpu;
`snapshot delete` removes the snapshot's record."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import REPO, Limactl

BEFORE, AFTER = "limapy-before-the-snapshot", "limapy-after-the-snapshot!"


def guest_file(limactl: Limactl) -> str:
    return limactl("shell", "t", "cat", "/tmp/file").stdout.strip()


def test_apply_into_a_changed_vm_is_refused(limactl: Limactl, tmp_path: Path) -> None:
    tiny = tmp_path / "t.yaml"
    tiny.write_text((REPO / "examples" / "tiny.yaml").read_text() + "\ncpus: 1\n")
    limactl("apply", str(tiny), timeout=300)
    limactl("shell", "t", "sh", "-c", f"echo {BEFORE} > /tmp/file")
    limactl("snapshot", "create", "t", "--tag", "one")
    records = json.loads((limactl.home / "t" / "snapshots.json").read_text())
    assert any(s.startswith("-smp 1,") for s in records["one"]["shape"])

    limactl("edit", "--cpus", "2", "--start", "t", timeout=400)
    limactl("shell", "t", "sh", "-c", f"echo {AFTER} > /tmp/file")
    refused = limactl("snapshot", "apply", "t", "--tag", "one", check=False)
    assert refused.returncode == 1, refused.stderr
    assert "cannot be loaded into the running VM" in refused.stderr
    assert "-smp 2," in refused.stderr and "Nothing was changed" in refused.stderr
    assert guest_file(limactl) == AFTER  # not paused, not partly restored
    assert limactl("list", "t", "--format", "{{.Status}}").stdout.strip() == "Running"

    limactl("edit", "--cpus", "1", "--start", "t", timeout=400)
    limactl("snapshot", "apply", "t", "--tag", "one")
    assert guest_file(limactl) == BEFORE

    limactl("snapshot", "delete", "t", "--tag", "one")
    assert not (limactl.home / "t" / "snapshots.json").exists()
    limactl("delete", "-f", "t", timeout=120)
