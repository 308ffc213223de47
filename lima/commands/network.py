"""`limactl network list|create|delete`: Lima's networks.yaml, as on any host.

On Linux Lima keeps the same file, verbs, flags, table, JSON lines and messages as on
macOS (its networks are used by socket_vmnet there and by `user-v2` everywhere); so does
limapy. The file itself is lima.drivers.networks'. cli.py registers the verb.
"""

from __future__ import annotations

import ipaddress
import logging

import click

from lima.errors import LimaError

log = logging.getLogger(__name__)

_CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=_CONTEXT)
def network() -> None:
    """Lima network management

    \b
    List all networks:
      $ limactl network list
    Create a network:
      $ limactl network create foo --gateway 192.168.42.1/24
    Connect VM instances to the newly created network:
      $ limactl create --network lima:foo --name vm1
    Delete a network:
      $ limactl network delete --force foo
    """


@network.command("list", context_settings=_CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="JSONify output")
@click.argument("names", nargs=-1)
def list_(as_json: bool, names: tuple[str, ...]) -> None:
    """List networks"""
    from lima.commands.disk import table
    from lima.drivers import networks

    config = networks.load_config()
    every = sorted(config.networks)
    chosen: list[str] = []
    if names:
        for name in names:
            if name in every:
                chosen.append(name)
            else:
                log.warning("No network matching %s found.", name)
    else:
        chosen = every
    if as_json:
        for name in chosen:
            click.echo(config.networks[name].json_line(name))
        return
    rows = [["NAME", "MODE", "GATEWAY", "INTERFACE"]]
    for name in chosen:
        nw = config.networks[name]
        rows.append([name, nw.mode, nw.gateway_cidr(), nw.interface or "-"])
    click.echo(table(rows), nl=False)


network.add_command(list_, "ls")


def gateway_entry(mode: str, gateway: str) -> dict[str, str]:
    """The entry `network create` writes for a gateway network (Go's net.ParseCIDR rules:
    `/24` when no prefix is given)."""
    cidr = gateway if "/" in gateway else gateway + "/24"
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError:
        raise LimaError(f"failed to parse CIDR `{cidr}`: invalid CIDR address: {cidr}"
                        ) from None
    if iface.ip.is_unspecified or iface.ip.is_loopback:
        raise LimaError(f"invalid IP address: {iface.ip}")
    return {"mode": mode, "gateway": str(iface.ip), "netmask": str(iface.netmask),
            "interface": ""}


@network.command("create", context_settings=_CONTEXT)
@click.option("--mode", default="user-v2", show_default=True, help="mode")
@click.option("--gateway", default="", help='gateway, e.g., "192.168.42.1/24"')
@click.option("--interface", "interface", default="", help="interface for bridged mode")
@click.argument("name", metavar="NETWORK")
def create(mode: str, gateway: str, interface: str, name: str) -> None:
    """Create a Lima network"""
    from lima.drivers import networks

    config = networks.load_config()
    if name in config.networks:
        raise LimaError(f"network `{name}` already exists")
    if mode == networks.MODE_BRIDGED:
        if gateway:
            raise LimaError(f"network mode `{mode}` does not support specifying gateway")
        if not interface:
            raise LimaError(f"network mode `{mode}` requires specifying interface")
        entry = {"mode": mode, "interface": interface}
    else:
        if not gateway:
            raise LimaError(f"network mode `{mode}` requires specifying gateway")
        if interface:
            raise LimaError(f"network mode `{mode}` does not support specifying interface")
        entry = gateway_entry(mode, gateway)
    networks.add_network(name, entry)


@network.command("delete", context_settings=_CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force delete (currently always required)")
@click.argument("names", nargs=-1, required=True, metavar="NETWORK [NETWORK, ...]")
def delete(force: bool, names: tuple[str, ...]) -> None:
    """Delete one or more Lima networks"""
    from lima.drivers import networks

    if not force:
        raise LimaError("`limactl network delete` currently always requires `--force`")
    networks.load_config()  # makes the file when missing, as Lima's yq step needs it
    networks.delete_networks(list(names))


network.add_command(delete, "remove")
network.add_command(delete, "rm")
