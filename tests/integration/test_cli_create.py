"""`limactl create` from a built-in template, through the real CLI in a subprocess.

Integration tier because create prepares the disks: `template:tiny` names `build:tiny`,
an image built on this machine (a few seconds the first time, cached afterwards). Nothing
boots here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from lima import LIMA_COMPAT_VERSION
from tests.integration.conftest import Limactl


def test_create_from_template_tiny(limactl: Limactl, _isolated_home: Path) -> None:
    proc = limactl("create", "--name", "t1", "template:tiny")
    assert "Traceback" not in proc.stderr
    inst = _isolated_home / "t1"
    assert (inst / "lima-version").read_text().strip() == LIMA_COMPAT_VERSION
    stored = yaml.safe_load((inst / "lima.yaml").read_text())
    # Self-contained: the template's content is embedded, no `base:` left to resolve.
    assert "base" not in stored
    assert stored["images"][0]["location"] == "build:tiny"
    assert stored["vmOpts"]["qemu"]["restrictNetwork"] is True
    for name in ("basedisk", "diffdisk"):
        assert (inst / name).is_file(), name
    info = subprocess.run(["qemu-img", "info", "--output=json", str(inst / "diffdisk")],
                          capture_output=True, text=True, check=True)
    assert '"virtual-size": 1073741824' in info.stdout  # tiny's disk: 1GiB
    assert not [p for p in _isolated_home.iterdir() if p.name.startswith(".")]

    # The stored lima.yaml validates on its own.
    assert limactl("validate", str(inst / "lima.yaml")).returncode == 0
    listed = limactl("list", "-q").stdout.split()
    assert listed == ["t1"]

    again = limactl("create", "--name", "t1", "template:tiny", check=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr

    # Default name from the template.
    limactl("create", "template:tiny")
    assert (_isolated_home / "tiny" / "lima.yaml").is_file()

    limactl("delete", "t1", "tiny")
    assert not (_isolated_home / "t1").exists()


def test_create_from_stdin_with_template_base(limactl: Limactl, _isolated_home: Path) -> None:
    limactl("create", "--name", "piped", "-", input="base: template:tiny\ncpus: 1\n")
    stored = yaml.safe_load((_isolated_home / "piped" / "lima.yaml").read_text())
    assert "base" not in stored and stored["cpus"] == 1
    assert (_isolated_home / "piped" / "diffdisk").is_file()
