"""Provisioning on real guests through the real CLI: a failing step named with its exit
status and output, probes (retried; a failing one with its hint), data files, env,
copyToHost with and without deleteOnStop, the message; on the tiny guest. yq and caCerts
need python3 and cloud-init: one Debian boot checks them together."""

from __future__ import annotations

import json
import shutil
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
    monkeypatch.setenv("LIMAPY_PROBE_TIMEOUT", "8")
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


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no qemu")
def test_debian_yq_ca_certs_env_and_timezone(limactl: Limactl, tmp_path: Path) -> None:
    """One Debian boot: yq on JSON (as the user), INI and YAML files; a CA certificate
    installed by cloud-init; env; the timezone."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "limapy test CA")])
    start = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    ca = tmp_path / "org-ca.pem"
    ca.write_text(pem)
    body = "".join(pem.strip().splitlines()[1:3])  # two base64 lines of the certificate

    f = tmp_path / "deb.yaml"
    f.write_text(f"""\
base: template:debian-12-local
mounts: []
vmOpts:
  qemu:
    restrictNetwork: true
timezone: Europe/Paris
caCerts:
  # Only this certificate: rehashing Debian's ~140 default ones costs minutes under TCG.
  removeDefaults: true
  files:
  - {ca}
env:
  GREETING: "hello world"
provision:
- mode: yq
  path: "{{{{.Home}}}}/.config/docker/daemon.json"
  expression: |
    .features.cdi = true |
    .features.containerd-snapshotter = false
  owner: "{{{{.User}}}}"
- mode: yq
  path: /etc/systemd/system/docker.socket.d/override.conf
  format: ini
  expression: .Socket.SocketUser="{{{{.User}}}}"
- mode: yq
  path: /etc/limapy/app.yaml
  expression: .a.list += ["x", "y"] | .a.name = "n"
  permissions: 600
- mode: data
  # data runs before yq (Lima's order), whatever their places in the list
  path: /etc/limapy/app.yaml
  content: |
    a:
      list: [w]
""")
    # Generous: several TCG guests on two shared cores take minutes to an ssh login.
    out = limactl("apply", "--timeout", "1500", str(f), timeout=1600)
    assert "deb: running" in out.stdout, out.stderr
    assert "degraded" not in out.stderr, out.stderr

    def sh(cmd: str) -> str:
        return limactl("shell", "deb", "sh", "-c", cmd).stdout

    config = record(limactl, "deb")["config"]
    assert isinstance(config, dict)
    user = config["user"]["name"]
    assert json.loads(sh("cat ~/.config/docker/daemon.json")) == {
        "features": {"cdi": True, "containerd-snapshotter": False}}
    ls = sh("ls -ln ~/.config/docker/daemon.json").split()
    assert ls[0] == "-rw-r--r--" and ls[2] == "1000", ls
    assert sh("cat /etc/systemd/system/docker.socket.d/override.conf") == (
        f"[Socket]\nSocketUser={user}\n\n")
    assert sh("sudo cat /etc/limapy/app.yaml") == "a:\n  list:\n  - w\n  - x\n  - y\n  name: n\n"
    assert sh("stat -c %a /etc/limapy/app.yaml").strip() == "600"
    # caCerts: in the system trust store, alone (removeDefaults).
    store = sh("cat /etc/ssl/certs/ca-certificates.crt")
    assert body in store.replace("\n", "")
    assert store.count("BEGIN CERTIFICATE") == 1
    schema = limactl("shell", "deb", "sudo", "cloud-init", "schema", "--system", check=False)
    assert "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
    assert '#LIMA-START\nGREETING="hello world"\n#LIMA-END' in sh("cat /etc/environment")
    assert sh("echo $GREETING").strip() == "hello world"
    assert sh("readlink /etc/localtime").strip().endswith("Europe/Paris")
    limactl("stop", "deb", timeout=300)
    assert qemu_pids_for(limactl.home) == []
