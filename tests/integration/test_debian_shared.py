"""One Debian guest (`build:debian-12`, cloud-init, the python3 guest agent) shared by every
check that needs that image rather than the tiny one: booting it costs about 90 s under
TCG, so this module boots it once and restarts it once instead of seven times.

The instance `deb` carries everything at once: 9p mounts (read-only and writable), a static
port forward, a guest socket forward and a reverse one, UDP through the ssh relay, yq /
data / env / caCerts / timezone provisioning, an ansible playbook using modules that need
python3 in the guest (the tiny guest has none), rsync for `limactl copy`, and a Lima data
disk (additionalDisks). The tests run in file order on it; each one checks one capability
and leaves the guest running. The last one applies a larger disk plus a mount that cannot
work (restart class): the restarted guest's root file system has grown, the data disk kept
its file, and the instance is Degraded with reason MountFailed naming only that mount.
Then stop, the disk verbs on a stopped instance's disk, and delete.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl, kill_leftovers, qemu_pids_for
from tests.integration.test_copy import _dir_cases, _file_cases
from tests.integration.test_disks import disk_json, settle
from tests.integration.test_portfwd import (
    free_port,
    http_ok,
    port_events,
    refused,
    talk,
    until,
)

# The fixture's boot counts towards the first test's timeout (about 90 s alone, minutes
# when other guests share the two cores).
pytestmark = [pytest.mark.integration, pytest.mark.debian, pytest.mark.timeout(2400)]

GiB = 1 << 30
NAME = "deb"

SPEC = """\
base: template:debian-12-local
cpus: 2
memory: "1GiB"
disk: "{disk}"
mountType: 9p
mounts:
- location: {ro}
  mountPoint: /mnt/ro
- location: {rw}
  mountPoint: /mnt/rw
  writable: true
{extra_mounts}vmOpts:
  qemu:
    restrictNetwork: true
additionalDisks:
- data
portForwards:
- guestPort: {static_guest}
  hostPort: {static_host}
  static: true
- guestSocket: "/tmp/pf-echo.sock"
  hostSocket: "pf.sock"
- guestSocket: "/tmp/pf-rev.sock"
  hostSocket: "{rev_sock}"
  reverse: true
timezone: Europe/Paris
caCerts:
  # Only this certificate: rehashing Debian's ~140 default ones costs minutes under TCG.
  removeDefaults: true
  files:
  - {ca}
env:
  GREETING: "hello world"
param:
  ANSIBLE_COLOR: green
provision:
- mode: ansible
  playbook: {playbook}
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
"""

# Runs from the host agent after the boot scripts, with Lima's inventory and PARAM_*.
ANSIBLE_PLAYBOOK = """\
- hosts: lima
  gather_facts: true
  tasks:
  - name: a file written by the copy module, as root
    become: true
    ansible.builtin.copy:
      dest: /etc/limapy-ansible
      content: "{{ ansible_facts['distribution'] }} {{ lookup('env', 'PARAM_ANSIBLE_COLOR') }}\\n"
      mode: "0644"
  - name: the command module
    ansible.builtin.command: id -un
    register: who
  - name: remember who ran it
    ansible.builtin.shell: echo "{{ who.stdout }}" > /tmp/limapy-ansible-user
"""

ECHO_SERVER = """
import os, socket
path = "/tmp/pf-echo.sock"
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"unix:" + c.recv(100))
    c.close()
"""


@dataclass
class Deb:
    """The shared instance: its limactl, lima.yaml, host directories and ports."""

    limactl: Limactl
    yaml: Path
    fields: dict[str, str]
    tmp: Path
    ro: Path
    rw: Path
    ca_body: str
    static_guest: int
    static_host: int
    first_apply: subprocess.CompletedProcess[str]

    def sh(self, script: str, *, check: bool = True, user_input: str | None = None,
           ) -> subprocess.CompletedProcess[str]:
        return self.limactl("shell", NAME, "sh", "-c", script, check=check, input=user_input)

    def write(self, **changes: str) -> None:
        self.fields.update(changes)
        self.yaml.write_text(SPEC.format(**self.fields))


def ca_certificate(tmp: Path) -> tuple[Path, str]:
    """A self-signed CA certificate file, and two base64 lines of its body."""
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
    path = tmp / "org-ca.pem"
    path.write_text(pem)
    return path, "".join(pem.strip().splitlines()[1:3])


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deb]:
    tmp = tmp_path_factory.mktemp("deb")
    home = tmp_path_factory.mktemp("lima-home")
    limactl = Limactl(home)
    ro, rw = tmp / "ro", tmp / "rw"
    ro.mkdir()
    (ro / "hello.txt").write_text("from the host\n")
    rw.mkdir()
    rw.chmod(0o777)  # the guest user writes here; 9p shows the host's owner and mode
    ca, body = ca_certificate(tmp)
    playbook = tmp / "ansible-site.yml"
    playbook.write_text(ANSIBLE_PLAYBOOK)
    static_guest, static_host = free_port(), free_port()
    fields = {"disk": "6GiB", "ro": str(ro), "rw": str(rw), "extra_mounts": "",
              "static_guest": str(static_guest), "static_host": str(static_host),
              "ca": str(ca), "playbook": str(playbook), "rev_sock": str(tmp / "rev.sock")}
    yaml = tmp / f"{NAME}.yaml"
    yaml.write_text(SPEC.format(**fields))
    # Ansible's own files (~/.ansible) stay out of $HOME; the host agent inherits this.
    saved = {k: os.environ.get(k) for k in ("ANSIBLE_HOME", "ANSIBLE_NOCOLOR")}
    os.environ.update(ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_NOCOLOR="1")
    try:
        limactl("disk", "create", "data", "--size", "1GiB")
        out = limactl("apply", "--timeout", "1500", str(yaml), timeout=1600)
        assert f"{NAME}: running" in out.stdout, out.stdout + out.stderr
        settle(limactl, NAME)
        yield Deb(limactl, yaml, fields, tmp, ro, rw, body, static_guest, static_host, out)
    finally:
        kill_leftovers(home)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_booted_clean(deb: Deb) -> None:
    """Everything above worked at the first boot: Running, not Degraded."""
    out = deb.first_apply
    assert "degraded" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    rec = json.loads(deb.limactl("list", "--format", "json", NAME).stdout)
    assert rec["status"] == "Running"
    status = deb.limactl("shell", NAME, "cloud-init", "status", "--long").stdout
    assert "status: done" in status and "DataSourceNoCloud" in status


def test_boot_trims_keep_features(deb: Deb) -> None:
    """What build:debian-12 cuts to boot fast (lima/drivers/images/build_debian.py) leaves
    what limapy needs: 9p, virtiofs and SCSI still load from /, the masked units stay
    masked, nothing listens on LLMNR's port (it would be forwarded), sshd started once
    (cloud-init's set-passwords had nothing to change), the agent logged its first report,
    cloud-init finished with the trimmed module list, blacklisted drivers are not loaded."""
    out = deb.sh(
        "sudo modprobe 9p && sudo modprobe virtiofs && sudo modprobe virtio_scsi "
        "&& echo modules-ok; "
        "systemctl is-enabled e2scrub_reap.service apt-daily.timer modprobe@drm.service "
        "2>/dev/null | sort -u | tr '\\n' ' '; echo; "
        "ss -Hltnu 'sport = :5355' | wc -l; "
        "sudo journalctl -b -u ssh --no-pager | grep -c 'Started ssh.service'; "
        "sudo journalctl -b -u lima-guestagent --no-pager | grep -c 'first report'; "
        "cloud-init status --long | sed -n 's/^status: //p'; "
        "lsmod | grep -cE '^(ahci|cfg80211|drm) '; true").stdout.splitlines()
    assert out[0] == "modules-ok"
    assert out[1].strip() == "masked"
    assert out[2] == "0"
    assert out[3] == "1"
    assert out[4] == "1"
    assert out[5] == "done"
    assert out[6] == "0"


def share_lines(deb: Deb) -> list[str]:
    """The guest's fstab lines of 9p shares carrying cloud-init's comment."""
    return [ln for ln in deb.sh("cat /etc/fstab").stdout.splitlines()
            if "comment=cloudconfig" in ln and ln.split()[2] == "9p"]


def test_9p_mounts(deb: Deb) -> None:
    table = deb.sh("cat /proc/mounts").stdout
    lines = {ln.split()[1]: ln.split() for ln in table.splitlines()}
    assert lines["/mnt/ro"][2] == "9p" and lines["/mnt/ro"][3].startswith("ro,")
    assert lines["/mnt/rw"][2] == "9p" and lines["/mnt/rw"][3].startswith("rw,")
    assert {"trans=virtio", "mmap"} <= set(lines["/mnt/rw"][3].split(","))  # cache=mmap

    assert deb.sh("cat /mnt/ro/hello.txt").stdout == "from the host\n"
    deb.sh("echo from the guest > /mnt/rw/guest.txt")
    assert (deb.rw / "guest.txt").read_text() == "from the guest\n"
    refused_write = deb.sh("sudo touch /mnt/ro/nope", check=False)
    assert refused_write.returncode != 0
    assert "Read-only file system" in refused_write.stderr, refused_write.stderr
    assert not (deb.ro / "nope").exists()

    # The base template's mounts (template:_default/mounts: the home and /tmp/lima) are
    # there too, after ours.
    points = [m["mountPoint"] for m in json.loads(deb.limactl(
        "list", "--format", "json", NAME).stdout)["config"]["mounts"]]
    assert points[:2] == ["/mnt/ro", "/mnt/rw"] and len(points) == 4
    env = deb.sh("sudo cat /mnt/lima-cidata/lima.env").stdout.splitlines()
    assert "LIMA_CIDATA_MOUNTS=4" in env and "LIMA_CIDATA_MOUNTTYPE=9p" in env
    assert "LIMA_CIDATA_MOUNTS_1_MOUNTPOINT=/mnt/rw" in env
    # boot.sh, not cloud-init (no `mounts:`), wrote the shares' lines, once each.
    assert sorted(share_lines(deb)) == sorted(
        deb.sh("sudo cat /mnt/lima-cidata/fstab").stdout.splitlines())

    # limactl shell started in a mounted host directory runs there in the guest.
    (deb.rw / "sub").mkdir()
    here = subprocess.run([sys.executable, "-m", "lima.cli", "shell", NAME, "pwd"],
                          env=deb.limactl.env(), capture_output=True, text=True,
                          timeout=120, cwd=deb.rw / "sub", check=True)
    assert here.stdout.strip() == "/mnt/rw/sub"


def test_http_server_static_and_socket_forwards(deb: Deb) -> None:
    home, http_port = deb.limactl.home, free_port()
    # python3 -m http.server: the command returns once the guest listens
    pid = deb.sh(f"cd /tmp && setsid python3 -m http.server {http_port} >/dev/null 2>&1 "
                 f"</dev/null & i=0; while ! grep -qi ':{http_port:04X} 00000000' "
                 f"/proc/net/tcp /proc/net/tcp6 && [ $i -lt 400 ]; do sleep 0.05; "
                 "i=$((i+1)); done; echo $!").stdout.split()[-1]
    listening = time.monotonic()
    until(lambda: http_ok(http_port), "http.server on the host", 2.0)
    assert time.monotonic() - listening <= 2.0
    deb.limactl("shell", NAME, "kill", pid)
    assert until(lambda: refused(http_port), "the port to be released", 10)
    events = port_events(home, NAME)
    assert any(e["type"] == "stopping" and e["hostAddr"] == f"127.0.0.1:{http_port}"
               for e in events)

    # static: bound from the start; answers once the guest listens
    assert any(e["type"] == "forwarding" and e["hostAddr"] == f"127.0.0.1:{deb.static_host}"
               for e in events)
    deb.sh(f"mkdir -p /tmp/s && echo static-ok > /tmp/s/index.html && cd /tmp/s && "
           f"setsid python3 -m http.server -b 127.0.0.1 {deb.static_guest} >/dev/null 2>&1 "
           "</dev/null &")
    assert until(lambda: b"static-ok" in talk(deb.static_host, b"GET / HTTP/1.0\r\n\r\n"),
                 "the static forward", 30)

    # a guest unix socket forwarded to a host socket (in the instance's sock/ directory)
    deb.sh("cat > /tmp/echo.py; (setsid python3 /tmp/echo.py >/dev/null 2>&1 </dev/null &); "
           "i=0; while [ ! -S /tmp/pf-echo.sock ] && [ $i -lt 200 ]; do sleep 0.05; "
           "i=$((i+1)); done", user_input=ECHO_SERVER)
    host_sock = home / NAME / "sock" / "pf.sock"
    assert host_sock.is_socket()

    def unix_echo() -> bytes:
        import socket
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(host_sock))
                s.sendall(b"hello")
                return s.recv(100)
        except OSError:
            return b""

    assert until(lambda: unix_echo() == b"unix:hello", "the socket forward", 90)


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(b"deb:" + d, a)
"""


def udp_ask(port: int, data: bytes, timeout: float) -> bytes:
    """Send to 127.0.0.1:port until an answer comes (a datagram sent before the guest
    relay is up is dropped)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(data, ("127.0.0.1", port))
            try:
                return s.recv(65535)
            except TimeoutError:
                continue
    raise AssertionError(f"no answer on UDP port {port} within {timeout:g} s")


def test_udp_on_guest_loopback_and_a_reverse_socket(deb: Deb) -> None:
    """A UDP listener on the guest's 127.0.0.1 is forwarded by the implicit rule (proto
    any, as Lima 2) through the ssh datagram relay (restrictNetwork keeps QEMU's UDP
    forward from answering); a host unix socket is reached from the guest (reverse)."""
    import socket
    import threading

    home = deb.limactl.home
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deb.sh(f"cat > /tmp/udp-echo.py; (setsid python3 /tmp/udp-echo.py {port} "
           ">/dev/null 2>&1 </dev/null &)", user_input=UDP_ECHO)
    assert udp_ask(port, b"hi", 60) == b"deb:hi"
    assert {"type": "forwarding", "protocol": "udp", "guestAddr": f"127.0.0.1:{port}",
            "hostAddr": f"127.0.0.1:{port}"} in port_events(home, NAME)
    big = bytes(range(256)) * 100  # one 25.6 kB datagram, binary, boundaries kept
    assert udp_ask(port, big, 30) == b"deb:" + big
    # [o]: the pattern must not match the `sh -c` running pkill itself.
    deb.sh(f"pkill -f 'udp-ech[o].py {port}'")
    until(lambda: any(e["type"] == "stopping" and e["guestAddr"] == f"127.0.0.1:{port}"
                      for e in port_events(home, NAME)), "the UDP stopping event", 30)

    host_sock = Path(deb.fields["rev_sock"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(host_sock))
    server.listen()

    def serve() -> None:
        with server:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"host:" + conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    ask = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect('/tmp/pf-rev.sock'); "
           "s.sendall(b'x'); print(s.recv(100).decode())")
    try:
        answer = until(lambda: deb.limactl("shell", NAME, "python3", "-c", ask,
                                           check=False).stdout.strip(),
                       "the reverse socket", 90)
        assert answer == "host:x"
    finally:
        server.close()


def test_yq_ca_certs_env_and_timezone(deb: Deb) -> None:
    """yq on JSON (as the user), INI and YAML files; a CA certificate installed by
    cloud-init; env; the timezone."""
    rec = json.loads(deb.limactl("list", "--format", "json", NAME).stdout)
    user = rec["config"]["user"]["name"]
    assert json.loads(deb.sh("cat ~/.config/docker/daemon.json").stdout) == {
        "features": {"cdi": True, "containerd-snapshotter": False}}
    ls = deb.sh("ls -ln ~/.config/docker/daemon.json").stdout.split()
    assert ls[0] == "-rw-r--r--" and ls[2] == "1000", ls
    assert deb.sh("cat /etc/systemd/system/docker.socket.d/override.conf").stdout == (
        f"[Socket]\nSocketUser={user}\n\n")
    assert deb.sh("sudo cat /etc/limapy/app.yaml").stdout == (
        "a:\n  list:\n  - w\n  - x\n  - y\n  name: n\n")
    assert deb.sh("stat -c %a /etc/limapy/app.yaml").stdout.strip() == "600"
    # caCerts: in the system trust store, alone (removeDefaults).
    store = deb.sh("cat /etc/ssl/certs/ca-certificates.crt").stdout
    assert deb.ca_body in store.replace("\n", "")
    assert store.count("BEGIN CERTIFICATE") == 1
    schema = deb.limactl("shell", NAME, "sudo", "cloud-init", "schema", "--system",
                         check=False)
    assert "Valid cloud-config" in schema.stdout, schema.stdout + schema.stderr
    assert '#LIMA-START\nGREETING="hello world"\n#LIMA-END' in deb.sh(
        "cat /etc/environment").stdout
    assert deb.sh("echo $GREETING").stdout.strip() == "hello world"
    assert deb.sh("readlink /etc/localtime").stdout.strip().endswith("Europe/Paris")


def test_ansible_modules(deb: Deb) -> None:
    """copy (with become), command and shell: modules that run python3 in the guest."""
    assert deb.sh("cat /etc/limapy-ansible").stdout == "Debian green\n"
    assert deb.sh("stat -c '%U %a' /etc/limapy-ansible").stdout == "root 644\n"
    user = json.loads(deb.limactl("list", "--format", "json", NAME).stdout)["config"]["user"]
    assert deb.sh("cat /tmp/limapy-ansible-user").stdout.strip() == user["name"]


def test_copy_with_rsync(deb: Deb) -> None:
    _file_cases(deb.limactl, NAME, deb.tmp, "rsync")
    _dir_cases(deb.limactl, NAME, deb.tmp, "rsync")
    auto = deb.limactl("--debug", "copy", str(deb.tmp / "hello-rsync.txt"),
                       f"{NAME}:/tmp/auto.txt")
    assert re.search(r"using copy tool .*rsync|rsync -a", auto.stderr), auto.stderr
    assert deb.limactl("shell", NAME, "cat", "/tmp/auto.txt").stdout == "hello\n"


def test_data_disk_mounted_and_refused_to_another(deb: Deb) -> None:
    limactl = deb.limactl
    mounts = limactl("shell", NAME, "findmnt", "-n", "-o", "SOURCE,FSTYPE,LABEL",
                     "/mnt/lima-data").stdout.split()
    assert mounts == ["/dev/vdb1", "ext4", "lima-data"]
    held = disk_json(limactl)["data"]
    assert (held["instance"], held["instanceDir"]) == (NAME, str(limactl.home / NAME))
    assert (limactl.home / "_disks" / "data" / "in_use_by").is_symlink()

    # Refusals while the instance runs.
    delete = limactl("disk", "delete", "data", check=False)
    assert delete.returncode == 1
    assert f"cannot delete disk `data` in use by instance `{NAME}`" in delete.stderr
    resize = limactl("disk", "resize", "data", "--size", "2GiB", check=False)
    assert resize.returncode == 1
    assert f"cannot resize disk `data` used by running instance `{NAME}`" in resize.stderr
    unlock = limactl("disk", "unlock", "data")
    assert f"Cannot unlock disk `data` used by running instance `{NAME}`" in unlock.stderr

    # A second instance (the tiny guest) is refused the disk, naming the holder.
    tiny = deb.tmp / "d2.yaml"
    tiny.write_text((REPO / "examples" / "tiny.yaml").read_text()
                    + "additionalDisks:\n- data\n")
    second = limactl("apply", str(tiny), check=False, timeout=600)
    assert second.returncode != 0
    assert f"could not attach disk `data`: in use by instance `{NAME}`" in second.stderr
    assert disk_json(limactl)["data"]["instance"] == NAME
    limactl("delete", "-f", "d2", timeout=300, check=False)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def sizes(deb: Deb) -> tuple[int, int]:
    """(the root file system's size, the root disk's size) in bytes, as the guest sees them."""
    df = deb.limactl("shell", NAME, "df", "-B1", "--output=size", "/").stdout.split()
    disk = deb.limactl("shell", NAME, "lsblk", "-b", "-d", "-n", "-o", "SIZE",
                       "/dev/vda").stdout
    return int(df[-1]), int(disk.strip())


def test_restart_grows_root_keeps_data_and_reports_a_failed_mount(deb: Deb) -> None:
    """A larger disk plus a mount that cannot work, applied with --restart=auto.

    The driver resizes diffdisk before qemu starts; the image's root file system fills the
    whole disk (root=LABEL=lima-root, no partition table) and cloud-init's resizefs grows
    it. The data disk's lock is released at stop and taken again at start.
    """
    limactl = deb.limactl
    fs_before, disk_before = sizes(deb)
    assert disk_before == 6 * GiB
    # The image's file system was grown to the disk at the first boot already (ext4's own
    # metadata takes a few per cent).
    assert 0.95 * 6 * GiB < fs_before <= 6 * GiB
    limactl("shell", NAME, "sudo", "sh", "-c", "echo kept > /mnt/lima-data/f")
    # The line of a share gone from lima.yaml, as an earlier boot would have left it.
    deb.sh("printf 'lima-0000000000000000\\t/mnt/gone\\t9p\\tro,trans=virtio,nofail,"
           "comment=cloudconfig\\t0\\t0\\n' | sudo tee -a /etc/fstab >/dev/null")
    assert "/mnt/gone" in deb.sh("cat /etc/fstab").stdout

    missing = deb.tmp / "made" / "by-limactl"
    deb.write(disk="8GiB", extra_mounts=(f"- location: {missing}\n"
                                         "  mountPoint: /sys/lima-cannot-mount\n"))
    out = limactl("apply", "--restart=auto", "--timeout", "1500", str(deb.yaml),
                  check=False, timeout=1600)
    assert f"{NAME}: running (restarted)" in out.stdout, out.stdout + out.stderr
    assert "degraded" in (out.stdout + out.stderr).lower()
    assert missing.is_dir()  # created on the host, as Lima does
    assert len(qemu_pids_for(limactl.home)) == 1
    settle(limactl, NAME)

    fs_after, disk_after = sizes(deb)
    assert disk_after == 8 * GiB
    assert 0.95 * 8 * GiB < fs_after <= 8 * GiB
    assert fs_after - fs_before > 1.9 * GiB
    rec = json.loads(limactl("list", "--format", "json", NAME).stdout)
    assert (rec["status"], rec["disk"]) == ("Running", 8 * GiB)
    assert limactl("shell", NAME, "cat", "/mnt/lima-data/f").stdout.strip() == "kept"
    # boot.sh dropped the gone share's line and added the new one's.
    seed_lines = deb.sh("sudo cat /mnt/lima-cidata/fstab").stdout.splitlines()
    # (New lines are appended, so fstab's order need not be the seed's.)
    assert sorted(share_lines(deb)) == sorted(seed_lines) and len(seed_lines) == 5

    status = json.loads((limactl.home / NAME / "status.json").read_text())
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MountFailed")
    assert "/sys/lima-cannot-mount" in degraded["message"]
    assert "/mnt/ro" not in degraded["message"]  # only the mount that failed is named
    # This boot's fstab had the shares' lines: systemd mounted them all at once, each
    # with its channel there (9p's transport is loaded in the initramfs). Only the gone
    # share's line, whose tag no device has, found none.
    missing_channels = [line.rsplit(" ", 1)[-1] for line in deb.sh("sudo dmesg").stdout
                        .splitlines() if "no channels available for device" in line]
    assert set(missing_channels) <= {"lima-0000000000000000"}, missing_channels
    print(f"root file system: {fs_before} -> {fs_after} bytes "
          f"(disk {disk_before} -> {disk_after})")

    # Stopped: the forwards are gone, the disk is free and grows; a plain disk delete
    # skips a disk a stopped instance references; deleting the instance keeps the disk.
    limactl("stop", NAME, timeout=300)
    assert qemu_pids_for(limactl.home) == []
    assert not (limactl.home / NAME / "sock" / "pf.sock").exists()
    assert not [pid for pid in Path("/proc").iterdir() if pid.name.isdigit()
                and "pf-rev.sock" in _cmdline(pid)]  # the reverse forward's ssh -R ended
    assert refused(deb.static_host)
    assert disk_json(limactl)["data"]["instance"] == ""
    limactl("disk", "resize", "data", "--size", "2GiB")
    assert disk_json(limactl)["data"]["size"] == 2 * GiB
    skipped = limactl("disk", "delete", "data")
    assert "Skipping deleting disk `data`" in skipped.stderr and f"`{NAME}`" in skipped.stderr
    limactl("delete", "-f", NAME, timeout=300)
    assert (limactl.home / "_disks" / "data" / "datadisk").is_file()
    limactl("disk", "delete", "--force", "data")
    assert not (limactl.home / "_disks" / "data").exists()
