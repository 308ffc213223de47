"""ssh options for one instance: ssh.config, `limactl shell` arguments, Ansible inventory.

Called by the controller when it builds the seed of a boot (the port is known then)
and by `limactl shell`. The options are the ones Lima writes (pkg/sshutil), so
`ssh -F ~/.lima/NAME/ssh.config lima-NAME` behaves as with Lima, plus `LIVENESS_OPTIONS`,
which Lima lacks, so that ssh gives up on a guest that stopped answering. Imports are
kept light (yaml, the runner and the identity module load on use) because `limactl
shell` imports this module on every call.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from lima import paths
from lima.errors import PermanentError
from lima.fsutil import atomic_write
from lima.names import guest_hostname

if TYPE_CHECKING:
    from lima.drivers.identity import Identity
    from lima.schemas.spec import InstanceSpec

LOCALHOST = "127.0.0.1"

# Why these exist: ssh's peer on 127.0.0.1:PORT is qemu's user-mode network (slirp) on the
# host, not the guest. slirp accepts the TCP connection and acknowledges data even when
# the guest is paused or hung, so neither the kernel's connect timeout nor TCPKeepAlive
# ever fires, and ssh (Lima writes none of these options) waits forever. Only checks
# inside the ssh protocol reach the guest's sshd:
# - ConnectTimeout bounds the TCP connect and the wait for sshd's banner (OpenSSH
#   applies it to both). A healthy sshd sends its banner within a second or two even
#   under TCG on a busy host; 10 s leaves a wide margin.
# - ServerAliveInterval/CountMax: after 5 s without a packet from sshd, ssh asks for a
#   reply, and after 3 unanswered asks in a row (15-20 s of silence) it ends the
#   connection ("Timeout, server ... not responding", exit 255). ssh also uses the
#   product as the packet timeout of key exchange and login. An idle interactive
#   session is never silent that long, since sshd answers each ask in milliseconds of
#   guest time; only a guest that cannot run sshd for 15 s is cut. A host suspend does
#   not cut a session either: ssh asks once per interval, and the guest (frozen with its
#   host) answers the first ask after wake-up.
# A master (ControlMaster=auto) carries these into every session multiplexed over it.
CONNECT_TIMEOUT = 10
SERVER_ALIVE_INTERVAL = 5
SERVER_ALIVE_COUNT_MAX = 3
LIVENESS_OPTIONS = (
    f"ConnectTimeout={CONNECT_TIMEOUT}",
    f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
    f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
)
# The longest ssh takes to give up on a silent guest, in seconds: a session through a
# master waits until the master's asks run out, then ssh falls back to a connection of
# its own, which waits ConnectTimeout for a banner.
GIVE_UP_AFTER = SERVER_ALIVE_INTERVAL * (SERVER_ALIVE_COUNT_MAX + 1) + CONNECT_TIMEOUT


def ssh_options(spec: InstanceSpec, inst_dir: Path, port: int, identity: Identity) -> list[str]:
    """`Key=Value` option strings, in Lima's order (IdentityFile first, Port last), with
    LIVENESS_OPTIONS before the user's."""
    control = inst_dir / paths.SSH_SOCK
    if len(str(control)) >= paths.UNIX_PATH_MAX:
        raise PermanentError(
            f"ssh control socket path {control} is too long (>= {paths.UNIX_PATH_MAX} bytes); "
            "set LIMA_HOME to a shorter directory"
        )
    opts = [f'IdentityFile="{identity.private_key}"']
    if spec.ssh.load_dot_ssh_pubkeys:
        from lima.drivers.identity import dot_ssh_private_keys

        opts += [f'IdentityFile="{key}"' for key in dot_ssh_private_keys()]
    opts += [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "NoHostAuthenticationForLocalhost=yes",
        "GSSAPIAuthentication=no",
        "PreferredAuthentications=publickey",
        "Compression=no",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
    ]
    ciphers = _preferred_ciphers()
    if ciphers:
        opts.append(f'Ciphers="{ciphers}"')
    opts += LIVENESS_OPTIONS
    opts += [
        f"User={spec.user.name}",
        "ControlMaster=auto",
        f'ControlPath="{control}"',
        "ControlPersist=yes",
    ]
    if spec.ssh.forward_agent:
        opts.append("ForwardAgent=yes")
    if spec.ssh.forward_x11:
        opts.append("ForwardX11=yes")
    if spec.ssh.forward_x11_trusted:
        opts.append("ForwardX11Trusted=yes")
    opts += [f"Hostname={LOCALHOST}", f"Port={port}"]
    return opts


def ssh_args(spec: InstanceSpec, inst_dir: Path, port: int, identity: Identity) -> list[str]:
    """`ssh` arguments before the destination: `-F /dev/null` then `-o KEY=VALUE` pairs.

    The caller appends the destination (`lima-NAME`; Hostname/Port are in the
    options) and the command, e.g. `["ssh", *ssh_args(...), "-t", "lima-NAME", "--", cmd]`.
    """
    args = ["-F", "/dev/null"]
    for opt in ssh_options(spec, inst_dir, port, identity):
        args += ["-o", opt]
    return args


def ssh_config_text(spec: InstanceSpec, inst_dir: Path, port: int, identity: Identity) -> str:
    """ssh.config: one `Host lima-NAME` block (the name `limactl shell` asks ssh for)."""
    lines = [f"Host {guest_hostname(spec.name)}"]
    for opt in ssh_options(spec, inst_dir, port, identity):
        key, _, value = opt.partition("=")
        lines.append(f"  {key} {value}")
    return "\n".join(lines) + "\n"


def write_ssh_config(spec: InstanceSpec, inst_dir: Path, *, port: int, identity: Identity) -> Path:
    """Write inst_dir/ssh.config atomically and return its path."""
    path = inst_dir / paths.SSH_CONFIG
    _write_file(path, ssh_config_text(spec, inst_dir, port, identity))
    return path


def ansible_inventory_text(spec: InstanceSpec, inst_dir: Path) -> str:
    """An inventory for real Ansible, Lima's (pkg/instance/ansible.go): group `lima`, one
    host named after the instance that connects as `lima-NAME` through ssh.config (which
    names the user, key and port: no ansible_user, so a play's remote_user still counts)."""
    import yaml

    config = inst_dir / paths.SSH_CONFIG
    host = {
        "ansible_connection": "ssh",
        "ansible_host": guest_hostname(spec.name),
        # Ansible splits this with shlex, so a quoted path survives spaces.
        "ansible_ssh_common_args": f"-F {shlex.quote(str(config))}",
    }
    doc = {"lima": {"hosts": {spec.name: host}}}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write_ansible_inventory(spec: InstanceSpec, inst_dir: Path) -> Path:
    """Write inst_dir/ansible-inventory.yaml atomically and return its path."""
    path = inst_dir / paths.ANSIBLE_INVENTORY
    _write_file(path, ansible_inventory_text(spec, inst_dir))
    return path


@functools.cache
def _preferred_ciphers() -> str:
    """Lima puts AES-GCM first when the CPU has AES, else chacha20; needs OpenSSH >= 8.1."""
    from lima.drivers import runner

    try:
        result = runner.run(["ssh", "-V"], check=False, timeout=5)
    except runner.CommandError:
        return ""
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    if not match or (int(match[1]), int(match[2])) < (8, 1):
        return ""
    if _cpu_has_aes():
        return "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
    return "^chacha20-poly1305@openssh.com"


def _cpu_has_aes() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and "aes" in value.split():
            return True
    return False


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
