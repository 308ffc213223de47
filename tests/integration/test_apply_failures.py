"""apply's failure paths through the real CLI: nothing half-written, no retry loop."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Limactl, qemu_pids_for


def test_apply_with_missing_image_fails_fast_and_leaves_nothing(
    limactl: Limactl, tmp_path: Path
) -> None:
    f = tmp_path / "gone.yaml"
    f.write_text(
        f"images:\n- location: {tmp_path / 'no-such.qcow2'}\n  arch: x86_64\n"
        "arch: x86_64\nmounts: []\nvmOpts:\n  qemu:\n    restrictNetwork: true\n"
    )
    for _ in range(2):  # the second apply retries, and fails the same way
        out = limactl("apply", "--timeout", "120", str(f), check=False)
        assert out.returncode == 1
        assert "no-such.qcow2" in out.stderr
        assert "Traceback" not in out.stderr
        # A permanent error stalls at once; it is not retried until the timeout.
        assert "is stalled" in out.stderr and "did not reach" not in out.stderr
        assert not (limactl.home / "gone").exists()
        assert not list(limactl.home.glob(".creating-*"))
    assert qemu_pids_for(limactl.home) == []
