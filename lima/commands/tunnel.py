"""`limactl tunnel [--type socks] [--socks-port N] INSTANCE`: a SOCKS proxy into the guest.

Called by `lima.cli` (lazily). As Lima does it: the system `ssh` with the instance's
options (`showssh.instance_ssh`) runs `-q -f -N -D 127.0.0.1:PORT`, so the proxy listens
on the host's loopback only; ssh puts itself in the background once logged in, and the
command prints how to use the proxy and returns. The tunnel lasts until that ssh process
ends (it is killed, or the guest goes away): like Lima, limapy has no `--stop`. With the
ControlMaster options of ssh.config, the forward lives in the instance's ssh master when
one already runs.
"""

from __future__ import annotations

import logging
import socket
import sys

import click

log = logging.getLogger(__name__)

_HELP = """Create a tunnel for Lima

Create a SOCKS tunnel so that the host can join the guest network.
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (Lima's freeport.TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tunnel_argv(options: list[str], port: int, ssh_port: int, ssh: str = "ssh") -> list[str]:
    """Lima's ssh command line for the SOCKS tunnel (pure)."""
    argv = [ssh, "-F", "/dev/null"]
    for option in options:
        argv += ["-o", option]
    return [*argv, "-q", "-f", "-N", "-D", f"127.0.0.1:{port}", "-p", str(ssh_port),
            "127.0.0.1"]


@click.command(help=_HELP, context_settings={"allow_interspersed_args": False})
@click.argument("instance")
@click.option("--type", "tunnel_type", default="socks", show_default=True,
              help='Tunnel type, currently only "socks" is implemented')
@click.option("--socks-port", type=int, default=0,
              help="SOCKS port, defaults to a random port")
def tunnel(instance: str, tunnel_type: str, socks_port: int) -> None:
    from lima.commands.showssh import instance_ssh
    from lima.drivers import runner
    from lima.drivers.store import STATUS_STOPPED, inspect_processes
    from lima.errors import LimaError

    log.warning("`limactl tunnel` is experimental")
    if tunnel_type != "socks":
        raise LimaError(f"unknown tunnel type: `{tunnel_type}`")
    if socks_port != 0 and not 1024 <= socks_port <= 65535:
        raise LimaError(f"invalid socks port {socks_port}")
    ssh = instance_ssh(instance)
    if inspect_processes(instance, ssh.dir).status == STATUS_STOPPED:
        raise LimaError(f"instance `{instance}` is stopped, run `limactl start {instance}` "
                        "to start the instance")
    port = socks_port or free_port()
    # Hostname/Port come from the command line (-p, 127.0.0.1), as in Lima.
    options = [o for o in ssh.options if not o.startswith(("Hostname=", "Port="))]
    argv = tunnel_argv(options, port, ssh.port)
    log.debug("executing ssh (may take a long time): %s", runner.shell_line(argv))
    # ssh's own output goes to our stderr; with -f it forks once logged in and the
    # parent exits, so waiting here waits for the login, not for the tunnel.
    err = sys.stderr.fileno()
    proc = runner.spawn(argv, stdout=err, stderr=err)
    code = proc.wait()
    if code != 0:
        raise LimaError(f"exit status {code}")
    click.echo(f"Set `ALL_PROXY=socks5h://127.0.0.1:{port}`, etc.")
    click.echo(f"The instance can be connected from the host as <http://{ssh.hostname}.internal> "
               "via a web browser.")
