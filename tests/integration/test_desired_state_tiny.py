"""`x-limapy.runState` with `limactl apply` on the tiny guest, through the real CLI: a new
file asking for `suspended` boots and is saved (Suspended); the file edited to `running`
resumes it (a file in /tmp, which is RAM there, is kept: no boot happened); `stopped`
shuts it down. Each step's plan shows the run state as a live change."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import REPO, Limactl, qemu_pids_for

MARK = "limapy-kept-across-the-suspend"


def wanting(path: Path, state: str) -> Path:
    path.write_text((REPO / "examples" / "tiny.yaml").read_text()
                    + f"\nx-limapy:\n  runState: {state}\n")
    return path


def status(limactl: Limactl) -> str:
    return limactl("list", "t", "--format", "{{.Status}}").stdout.strip()


def test_apply_drives_the_files_run_state(limactl: Limactl, tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    out = limactl("apply", str(wanting(f, "suspended")), timeout=400).stdout
    assert out.strip().endswith("t: suspended") and status(limactl) == "Suspended"
    assert qemu_pids_for(limactl.home) == []
    assert (limactl.home / "t" / "suspend.state").is_file()

    plan = limactl("apply", "--dry-run", str(wanting(f, "running")), check=False)
    assert plan.returncode == 2 and "x-limapy.runState" in plan.stdout
    assert "resume (no restart)" in plan.stdout
    limactl("apply", str(f), timeout=300)
    assert status(limactl) == "Running"
    limactl("shell", "t", "sh", "-c", f"echo {MARK} > /tmp/kept")

    limactl("apply", str(wanting(f, "suspended")), timeout=300)
    assert status(limactl) == "Suspended"
    limactl("apply", str(wanting(f, "running")), timeout=300)
    assert status(limactl) == "Running"
    assert limactl("shell", "t", "cat", "/tmp/kept").stdout.strip() == MARK

    out = limactl("apply", str(wanting(f, "stopped")), timeout=300).stdout
    assert "t: stopped" in out and status(limactl) == "Stopped"
    assert qemu_pids_for(limactl.home) == []
    same = limactl("diff", "t", str(f), check=False)
    assert same.returncode == 0, same.stdout
    limactl("delete", "-f", "t", timeout=120)
