"""`provision: mode: ansible` with the real ansible-playbook on the tiny guest.

The tiny guest has no python3, so the playbooks here use `raw` tasks only, with
`gather_facts: false`; modules that need python in the guest (copy, command, ...) are
checked on the shared Debian instance (test_debian_shared.py). What this shows: the host agent
runs ansible-playbook with Lima's inventory (group `lima`, the host named after the instance,
reached through ssh.config as `lima-NAME`) and PARAM_* in its environment; a step that
fails makes the instance Degraded naming the step and ansible's exit status, and the steps
before it have taken effect.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import Limactl, qemu_pids_for

TINY = """\
base: template:tiny
vmOpts:
  qemu:
    restrictNetwork: true
"""

PLAYBOOK = """\
- hosts: lima
  gather_facts: false
  tasks:
  - name: leave a mark
    raw: >-
      echo "{{ inventory_hostname }} {{ ansible_host }} $(id -un)
      {{ lookup('env', 'PARAM_COLOR') }}" >/tmp/played
"""

FAILING = """\
- hosts: all
  gather_facts: false
  tasks:
  - name: fail on purpose
    raw: echo "the frobnicator is missing" >&2; exit 3
"""


@pytest.fixture(autouse=True)
def _ansible_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ansible's own files (~/.ansible: temp files, ssh control sockets) under tmp_path."""
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is not installed: run scripts/bootstrap (ansible-core)")
    monkeypatch.setenv("ANSIBLE_HOME", str(tmp_path / "ansible-home"))
    monkeypatch.setenv("ANSIBLE_NOCOLOR", "1")


def test_playbooks_run_with_limas_inventory_and_params(limactl: Limactl, tmp_path: Path) -> None:
    good, bad = tmp_path / "site.yml", tmp_path / "broken.yml"
    good.write_text(PLAYBOOK)
    bad.write_text(FAILING)
    spec = tmp_path / "an.yaml"
    spec.write_text(TINY + f"""\
param:
  COLOR: blue
provision:
- mode: ansible
  playbook: {good}
- mode: ansible
  playbook: {bad}
""")
    out = limactl("apply", str(spec), timeout=300)
    assert "an: running" in out.stdout

    # The first playbook ran in the guest, as the guest user; ansible-playbook had the
    # param in its environment (on the host: a lookup, not the guest's shell).
    played = limactl("shell", "an", "cat", "/tmp/played").stdout
    assert played == "an lima-an lima blue\n"

    inventory = (limactl.home / "an" / "ansible-inventory.yaml").read_text()
    assert inventory.startswith("lima:\n  hosts:\n    an:\n")

    rec = json.loads(limactl("list", "--format", "json", "an").stdout)
    conditions = rec["conditions"]
    (cond,) = [c for c in conditions if c["type"] == "Degraded"]
    assert cond["status"] == "True"
    message = cond["message"]
    assert message.startswith('provision[1] (mode: ansible) "')
    # ansible's own words about the failed task (its rc), not its recap
    assert ": exit 2; last output: fat" in message and '"rc": 3' in message
    assert "provision[0]" not in message

    limactl("stop", "an", timeout=120)
    assert qemu_pids_for(limactl.home) == []
