"""`mode: ansible` steps run by lima.drivers.postboot.run_ansible against a stand-in
`ansible-playbook` on PATH (a shell script that records what it was given): Lima's argv
(`-i <inst>/ansible-inventory.yaml PLAYBOOK`), PARAM_* in its environment, one problem
per failing step, and the clear error when ansible-playbook is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.drivers import postboot
from tests.unit.cidata_fixtures import Provision, make_spec

FAKE = """#!/bin/sh
printf '%s\\n' "$@" >> "{log}"
echo "PARAM_COLOR=$PARAM_COLOR" >> "{log}"
case "$3" in *broken*) echo 'fatal: [demo]: FAILED! => {{"rc": 3}}'; exit 2;; esac
exit 0
"""


@pytest.fixture
def fake_ansible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    exe = bindir / "ansible-playbook"
    exe.write_text(FAKE.format(log=log))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return log


def test_each_step_runs_with_the_inventory_and_params(fake_ansible: Path, tmp_path: Path,
                                                      ) -> None:
    spec = make_spec(param={"COLOR": "blue"}, provision=(
        Provision(mode="ansible", playbook="/p/site.yml"),
        Provision(mode="system", script="#!/bin/sh\ntrue\n"),
        Provision(mode="ansible", playbook="/p/broken.yml"),
    ))
    problems = postboot.run_ansible(spec, tmp_path, timeout=30)
    inventory = str(tmp_path / "ansible-inventory.yaml")
    assert fake_ansible.read_text().splitlines() == [
        "-i", inventory, "/p/site.yml", "PARAM_COLOR=blue",
        "-i", inventory, "/p/broken.yml", "PARAM_COLOR=blue",
    ]
    assert problems == ['provision[2] (mode: ansible) "/p/broken.yml": exit 2; last output: '
                        'fatal: [demo]: FAILED! => {"rc": 3}']


def test_missing_ansible_playbook_is_named_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = make_spec(provision=(Provision(mode="ansible", playbook="/p/site.yml"),))
    assert postboot.run_ansible(spec, tmp_path) == [
        'provision[0] (mode: ansible) "/p/site.yml": not run: ansible-playbook is not '
        "installed on the host (Debian package ansible-core)"]
