"""Semantic rules for networking: port forwards, copyToHost, dns and networks[].

Registered in RULES and run by `validate.check()` after the rules of rules.py. Port
forwards get Lima's defaults first (a port means the range [port, port], no port means
every port, the host range follows the guest range), then Lima's checks: ports 1-65535 and
never 22, ordered ranges of equal length, sockets absolute and never mapped to a range,
`reverse` only between two sockets; and what the forwarder cannot do (UDP to or from a
unix socket) is refused, not ignored.
"""

from __future__ import annotations

import re
from typing import Any

from lima.paths import UNIX_PATH_MAX
from lima.schemas.lines import Path
from lima.schemas.rulebase import (
    PROTOS,
    SLIRP_NIC,
    Ctx,
    Rule,
    check_enum,
    check_ip,
    int_of,
    port_problem,
    str_of,
    templated,
)

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}$")

RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


# -- port forwards, copyToHost ------------------------------------------------------------
def _range(entry: dict[str, Any], key: str) -> tuple[int, int] | None:
    value = entry.get(key)
    if isinstance(value, list) and len(value) == 2:
        a, b = int_of(value[0]), int_of(value[1])
        if a is not None and b is not None:
            return (a, b)
    return None


@rule
def port_forwards(ctx: Ctx) -> None:
    for i, fwd in ctx.entries("portForwards"):
        _port_forward(ctx, ("portForwards", i), fwd)


def _port_forward(ctx: Ctx, path: Path, fwd: dict[str, Any]) -> None:
    guest_socket = str_of(fwd.get("guestSocket")) or ""
    host_socket = str_of(fwd.get("hostSocket")) or ""
    guest_port = int_of(fwd.get("guestPort")) or 0
    host_port = int_of(fwd.get("hostPort")) or 0
    if any(fwd.get(k) is not None and int_of(fwd.get(k)) is None
           for k in ("guestPort", "hostPort")):
        return  # wrong types: the schema said so
    # Lima's defaults: a port means the range [port, port]; no port means every port.
    guest_range = _range(fwd, "guestPortRange")
    explicit_guest_range = guest_range is not None and guest_range != (0, 0)
    if not explicit_guest_range:
        guest_range = (guest_port, guest_port) if guest_port else (1, 65535)
    host_range = _range(fwd, "hostPortRange")
    explicit_host_range = host_range is not None and host_range != (0, 0)
    if not explicit_host_range:
        host_range = (host_port, host_port) if host_port else guest_range
    assert guest_range is not None and host_range is not None

    must_be_zero = fwd.get("guestIPMustBeZero") is True
    guest_ip = str_of(fwd.get("guestIP"))
    if must_be_zero and guest_ip is not None and guest_ip != "0.0.0.0":
        ctx.error((*path, "guestIPMustBeZero"), 'can only be true when guestIP is "0.0.0.0"')
    check_ip(ctx, (*path, "guestIP"), guest_ip)
    check_ip(ctx, (*path, "hostIP"), fwd.get("hostIP"))

    for side, port, socket, rng, explicit in (
        ("guest", guest_port, guest_socket, guest_range, explicit_guest_range),
        ("host", host_port, host_socket, host_range, explicit_host_range),
    ):
        if port:
            if socket:
                ctx.error((*path, f"{side}Port"), f"must not be set when {side}Socket is set")
            if explicit and port != rng[0]:
                ctx.error((*path, f"{side}Port"), f"must match {side}PortRange[0]")
            why = port_problem(port)
            if why:
                ctx.error((*path, f"{side}Port"), why)
        if not explicit:
            continue  # derived from the port (checked above) or Lima's full range
        if side == "guest" or not host_socket:
            for j in (0, 1):
                why = port_problem(rng[j])
                if why:
                    ctx.error((*path, f"{side}PortRange", j), why)
        if rng[0] > rng[1]:
            ctx.error((*path, f"{side}PortRange", 1), f"must be greater than or equal to "
                      f"{side}PortRange[0]")

    if guest_socket:
        if not templated(guest_socket) and not guest_socket.startswith("/"):
            ctx.error((*path, "guestSocket"), f'must be an absolute path, got "{guest_socket}"')
        if not host_socket and host_range[1] - host_range[0] > 0:
            ctx.error((*path, "guestSocket"), "can only be forwarded to a single port or "
                      "socket, not a range")
    if host_socket:
        if not guest_socket and guest_range[1] - guest_range[0] > 0:
            ctx.error((*path, "hostSocket"), "can only be forwarded from a single port or "
                      "socket, not a range")
        if len(host_socket) >= UNIX_PATH_MAX:
            ctx.error((*path, "hostSocket"), f"must be shorter than {UNIX_PATH_MAX} "
                      f"characters (UNIX_PATH_MAX), got {len(host_socket)}")
    elif guest_range[1] - guest_range[0] != host_range[1] - host_range[0]:
        ctx.error((*path, "hostPortRange"), "must cover as many ports as guestPortRange")
    check_enum(ctx, (*path, "proto"), fwd.get("proto"), PROTOS)
    if fwd.get("reverse") is True and not (guest_socket and host_socket):
        ctx.error((*path, "reverse"), "can only be true when both guestSocket and hostSocket "
                  "are set")
    # UDP has no unix-socket end in the forwarder (Lima's neither): refused, not ignored.
    if fwd.get("proto") == "udp" and (guest_socket or host_socket) \
            and fwd.get("ignore") is not True:
        ctx.error((*path, "proto"), '"udp" cannot be forwarded from or to a unix socket '
                  f'({"guestSocket" if guest_socket else "hostSocket"} is set); use "tcp"')


@rule
def copy_to_host(ctx: Ctx) -> None:
    for i, entry in ctx.entries("copyToHost"):
        for key in ("guest", "host"):
            value = str_of(entry.get(key))
            if value and not templated(value) and not value.startswith("/"):
                ctx.error(("copyToHost", i, key), f'must be an absolute path, got "{value}"')


# -- networking ---------------------------------------------------------------------------
@rule
def dns(ctx: Ctx) -> None:
    servers = ctx.data.get("dns")
    if not isinstance(servers, list):
        return
    for i, server in enumerate(servers):
        check_ip(ctx, ("dns", i), server)
    # Only an explicit `enabled: true` conflicts: Lima's own templates set dns alone (the
    # filled default of enabled is true, so the filled document is not judged here).
    if servers and not ctx.filled and ctx.get("hostResolver", "enabled") is True:
        ctx.error(("dns",), "must be empty when hostResolver.enabled is true")


@rule
def networks(ctx: Ctx) -> None:
    seen: dict[str, int] = {}
    for i, net in ctx.entries("networks"):
        path: Path = ("networks", i)
        kinds = [k for k in ("lima", "socket") if str_of(net.get(k))]
        if net.get("vzNAT") is True:
            kinds.append("vzNAT")
        if not kinds:
            ctx.error(path, 'one of "lima", "socket" or "vzNAT" must be set')
        elif len(kinds) > 1:
            ctx.error((*path, kinds[1]), f'"{kinds[0]}" and "{kinds[1]}" are mutually exclusive')
        else:
            # Never dropped in silence: the guest would boot without the network asked for.
            ctx.error((*path, kinds[0]), "is not supported by limapy: guests get QEMU user "
                      "networking (with port forwards) only; remove networks[]")
        mac = str_of(net.get("macAddress"))
        if mac and not _MAC.match(mac):
            ctx.error((*path, "macAddress"), f'"{mac}" is not a 48-bit MAC address')
        iface = str_of(net.get("interface"))
        if iface:
            if len(iface.encode()) >= 16:
                ctx.error((*path, "interface"), "must be shorter than 16 bytes")
            if re.search(r"[\s/]", iface):
                ctx.error((*path, "interface"), "must not contain whitespace or slashes")
            if iface == SLIRP_NIC:
                ctx.error((*path, "interface"), f'"{SLIRP_NIC}" is reserved for user-mode '
                          "networking")
            if iface in seen:
                ctx.error((*path, "interface"), f'"{iface}" is already used by '
                          f"networks[{seen[iface]}]")
            seen[iface] = i
