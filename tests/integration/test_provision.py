"""Provisioning on real guests through the real CLI: a failing step named with its exit
status and output, probes (retried; a failing one with its hint), data files, env,
copyToHost with and without deleteOnStop, the message; on the tiny guest. yq and caCerts
need python3 and cloud-init: the shared Debian instance (test_debian_shared.py) checks them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import Limactl, qemu_pids_for

TINY = """\
base: template:tiny
vmOpts:
  qemu:
    restrictNetwork: true
"""


def record(limactl: Limactl, name: str) -> dict[str, object]:
    rec: dict[str, object] = json.loads(limactl("list", "--format", "json", name).stdout)
    return rec


def degraded(rec: dict[str, object]) -> dict[str, str]:
    conds = rec["conditions"]
    assert isinstance(conds, list)
    (cond,) = [c for c in conds if c["type"] == "Degraded"]
    assert isinstance(cond, dict)
    return cond


def test_failing_step_data_env_copy_to_host_and_message(
    limactl: Limactl, tmp_path: Path
) -> None:
    f = tmp_path / "pf.yaml"
    f.write_text(TINY + """\
env:
  GREETING: "hello world"
param:
  COLOR: blue
provision:
- mode: data
  path: "{{.Home}}/.config/app/settings.conf"
  content: |
    color={{.Param.COLOR}}
  owner: "{{.User}}"
  permissions: "640"
- mode: system
  script: |
    #!/bin/sh
    echo "system sees $PARAM_COLOR" > /run/sys-param
    echo "guest secret" > /run/copy-me
    chmod 600 /run/copy-me
- mode: system
  script: |
    #!/bin/sh
    # install the frobnicator
    echo "fetching frobnicator"
    echo "E: Unable to locate package frobnicator" >&2
    exit 7
- mode: user
  script: |
    #!/bin/sh
    echo "user ran" > "$HOME/user-ran"
copyToHost:
- guest: /run/copy-me
  host: "{{.Dir}}/copied/secret"
  deleteOnStop: true
- guest: /run/sys-param
  host: "{{.Dir}}/copied/param"
- guest: /nonexistent
  host: "{{.Dir}}/copied/none"
  skipIfMissing: true
message: |
  Instance {{.Name}} lives in {{.Dir}} (port {{.SSHLocalPort}}, {{.Param.COLOR}}).
""")
    out = limactl("apply", str(f), timeout=300)
    assert "pf: running" in out.stdout
    inst = limactl.home / "pf"
    port = json.loads((inst / "cidata.json").read_text())["sshLocalPort"]
    # The failing step by its index and first line, exit status and last output lines.
    step = ('provision[2] (mode: system) "install the frobnicator": exit 7; last output: '
            "fetching frobnicator | E: Unable to locate package frobnicator")
    assert f"[pf] degraded: provisioning failed: {step}" in out.stderr
    # The message, rendered, once running.
    shown = f"Instance pf lives in {inst} (port {port}, blue)."
    assert f"Message from the instance 'pf':\n{shown}\n" in out.stderr

    rec = record(limactl, "pf")
    assert rec["status"] == "Running" and rec["ready"] is False
    cond = degraded(rec)
    assert cond["status"] == "True" and cond["reason"] == "ProvisionFailed"
    assert step in cond["message"]
    assert rec["message"] == shown + "\n"
    # The step's whole output stays in the guest for this boot.
    log = limactl("shell", "pf", "cat", "/run/lima-provision/provision.system_00000002.log")
    assert "E: Unable to locate package frobnicator" in log.stdout
    # The steps after the failing one still ran.
    assert limactl("shell", "pf", "cat", "user-ran").stdout == "user ran\n"

    # data: content with params, owner and permissions; its new directories are the user's.
    ls = limactl("shell", "pf", "ls", "-ln", ".config/app/settings.conf").stdout.split()
    assert ls[0] == "-rw-r-----" and ls[2] == "1000"
    assert limactl("shell", "pf", "ls", "-ldn", ".config/app").stdout.split()[2] == "1000"
    assert limactl("shell", "pf", "cat", ".config/app/settings.conf").stdout == "color=blue\n"
    # env: in /etc/environment between Lima's markers, and in the login environment.
    etc = limactl("shell", "pf", "cat", "/etc/environment").stdout
    assert '#LIMA-START\nGREETING="hello world"\n#LIMA-END\n' in etc
    assert limactl("shell", "pf", "cat", "/run/sys-param").stdout == "system sees blue\n"

    # copyToHost: both copied (0600), a missing guest file skipped.
    secret, param = inst / "copied" / "secret", inst / "copied" / "param"
    assert secret.read_text() == "guest secret\n"
    assert param.read_text() == "system sees blue\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not (inst / "copied" / "none").exists()

    limactl("stop", "pf", timeout=120)
    assert not secret.exists()  # deleteOnStop
    assert param.read_text() == "system sees blue\n"  # kept
    assert qemu_pids_for(limactl.home) == []
    # A delete removes the copies limactl made inside the instance directory.
    limactl("delete", "pf", timeout=120)
    assert not inst.exists()


def test_probes_are_retried_and_a_failing_one_gives_its_hint(
    limactl: Limactl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIMAPY_PROBE_TIMEOUT", "5")  # the failing one waits it out
    monkeypatch.setenv("LIMAPY_PROBE_INTERVAL", "1")
    f = tmp_path / "pr.yaml"
    f.write_text(TINY + """\
param:
  MARK: /tmp/probe-seen
provision:
- mode: system
  script: |
    #!/bin/sh
    echo provisioned > /run/provisioned
probes:
- description: passes on its second attempt
  script: |
    #!/bin/sh
    [ -e "$PARAM_MARK" ] && exit 0
    touch "$PARAM_MARK"
    exit 1
- description: frobnicator is running
  script: |
    #!/bin/sh
    echo "no frobnicator process" >&2
    exit 3
  hint: |
    Check the frobnicator service
    with journalctl.
""")
    out = limactl("apply", str(f), timeout=300)
    assert "pr: running" in out.stdout
    rec = record(limactl, "pr")
    cond = degraded(rec)
    assert cond["status"] == "True" and cond["reason"] == "ProbeFailed"
    msg = cond["message"]
    assert msg.startswith("probe 2 of 2 ('frobnicator is running') failed (exit 3, ")
    assert "hint: Check the frobnicator service with journalctl." in msg
    assert "last output: no frobnicator process" in msg
    assert "passes on its second attempt" not in msg  # retried until it passed
    assert limactl("shell", "pr", "cat", "/tmp/probe-seen").returncode == 0
    limactl("stop", "pr", timeout=120)
