"""build:debian-12's cloud-init generator (lima/drivers/images/build_debian.py,
CLOUD_INIT_GENERATOR), run with /bin/sh on the host against temporary directories: the
switches of cloud-init's own generator, without ds-identify."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lima.drivers.images import build_debian

pytestmark = pytest.mark.component

TARGET = "/lib/systemd/system/cloud-init.target"


def generate(tmp_path: Path, cmdline: str, *, disabled_file: bool = False) -> Path:
    script = tmp_path / "cloud-init-generator"
    script.write_text(build_debian.CLOUD_INIT_GENERATOR)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    etc = tmp_path / "etc-cloud"
    etc.mkdir(exist_ok=True)
    if disabled_file:
        (etc / "cloud-init.disabled").write_text("")
    early = tmp_path / "generator.early"
    env = {"PATH": "/usr/bin:/bin", "LIMAPY_RUN_CLOUD_INIT": str(tmp_path / "run"),
           "LIMAPY_PROC_CMDLINE": str(tmp_path / "cmdline"), "LIMAPY_ETC_CLOUD": str(etc)}
    subprocess.run(["/bin/sh", str(script), str(tmp_path / "normal"), str(early),
                    str(tmp_path / "late")], env=env, check=True, timeout=30)
    return early


def test_cloud_init_is_wanted_with_the_datasources_ds_identify_would_pick(
    tmp_path: Path,
) -> None:
    early = generate(tmp_path, "root=LABEL=lima-root console=ttyS0 quiet")
    link = early / "multi-user.target.wants" / "cloud-init.target"
    assert link.is_symlink() and str(link.readlink()) == TARGET
    run = tmp_path / "run"
    assert (run / "cloud.cfg").read_text() == "datasource_list: [ NoCloud, None ]\n"
    assert (run / "enabled").exists() and not (run / "disabled").exists()


@pytest.mark.parametrize("how", ["cmdline", "file"])
def test_cloud_init_stays_off_when_disabled(tmp_path: Path, how: str) -> None:
    cmdline = "quiet cloud-init=disabled" if how == "cmdline" else "quiet"
    early = generate(tmp_path, cmdline, disabled_file=how == "file")
    assert not (early / "multi-user.target.wants").exists()
    run = tmp_path / "run"
    assert (run / "disabled").exists() and not (run / "enabled").exists()
