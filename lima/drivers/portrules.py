"""Which host address a guest listener is forwarded to: Lima's portForwards rules (pure).

The host agent's forwarder (lima.drivers.hostagent.portfwd) asks `forward_for()` about each
listening socket the guest agent reports, and `static_targets()` / `socket_rules()` at
start. No I/O here: data in, data out, so tests/unit/test_portrules.py covers the table.

Lima's semantics (pkg/portfwd, pkg/hostagent/port.go):
- The rule list is: ignore guest port 22 and the instance's ssh.localPort on every guest
  address, then the instance's rules in order, then a fallback that forwards every port
  of a listener on 127.0.0.1 (and ::1, and the unspecified addresses) to the same port on
  host 127.0.0.1.
- A rule matches a listener when its proto is "any" or the listener's, the port is in
  guestPortRange, and the address fits: a listener on 0.0.0.0 or :: fits every rule; ::1
  fits a rule for 127.0.0.1; a rule for 0.0.0.0 fits every address unless
  guestIPMustBeZero is set (then only 0.0.0.0 / ::).
- The first matching rule wins. An `ignore` rule stops the search (the listener is not
  forwarded), except that an ignore rule for a specific address does not stop a listener
  on an unspecified address: a later rule may still forward that one.
- The host port keeps the listener's offset in the range: guestPort + hostPortRange[0] -
  guestPortRange[0]; a hostSocket replaces the host address.
- Rules with a guestSocket are never matched against listeners; they are forwarded once
  the guest is up (`socket_rules`). A listener whose port is inside a static rule's range
  is left to that static forward (`statically_forwarded`).
- Since Lima 2.0 a rule's proto defaults to "any": UDP listeners follow the same rules
  (the implicit fallback forwards UDP on guest loopback too). A `reverse` rule carries
  a host socket into the guest (`reverse_rules`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from lima.schemas.spec import PortForward

GUEST_SSH_PORT = 22
LOOPBACK4 = "127.0.0.1"
_IPv = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class Listener:
    """A listening socket in the guest: proto "tcp" or "udp", normalized address, port."""

    proto: str
    ip: str
    port: int

    def guest_addr(self) -> str:
        """Lima's `guestAddr` text: host:port, IPv6 in brackets."""
        return join_host_port(self.ip, self.port)


@dataclass(frozen=True)
class Rule:
    """One filled portForwards entry in the form the matcher uses."""

    guest_ip: str = LOOPBACK4
    guest_ip_must_be_zero: bool = False
    guest_range: tuple[int, int] = (1, 65535)
    host_ip: str = LOOPBACK4
    host_range: tuple[int, int] = (1, 65535)
    proto: str = "any"
    ignore: bool = False
    static: bool = False
    guest_socket: str = ""
    host_socket: str = ""
    reverse: bool = False
    implicit: bool = False  # added by limapy/Lima, not written by the user


@dataclass(frozen=True)
class HostTarget:
    """Where a forward listens on the host: a TCP/UDP address or a unix socket path."""

    ip: str = ""
    port: int = 0
    socket: str = ""

    def text(self) -> str:
        return self.socket or join_host_port(self.ip, self.port)


def join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def normalize_ip(text: str) -> str:
    """The canonical text of an address; an IPv4-mapped IPv6 address becomes IPv4 (Go's
    net.IP treats both forms as equal). ValueError when it is not an address."""
    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _addr(text: str) -> _IPv:
    return ipaddress.ip_address(normalize_ip(text))


def rule_of(fwd: PortForward) -> Rule:
    """A filled spec entry as a Rule (ranges default from the ports, as Lima fills them)."""
    guest_range = fwd.guest_port_range or (
        (fwd.guest_port, fwd.guest_port) if fwd.guest_port else (1, 65535))
    host_range = fwd.host_port_range or (
        (fwd.host_port, fwd.host_port) if fwd.host_port else guest_range)
    return Rule(
        guest_ip=fwd.guest_ip,
        guest_ip_must_be_zero=fwd.guest_ip_must_be_zero,
        guest_range=(guest_range[0], guest_range[1]),
        host_ip=fwd.host_ip,
        host_range=(host_range[0], host_range[1]),
        proto=fwd.proto,
        ignore=fwd.ignore,
        static=fwd.static,
        guest_socket=fwd.guest_socket or "",
        host_socket=fwd.host_socket or "",
        reverse=fwd.reverse,
    )


def build_rules(forwards: Sequence[PortForward], ssh_local_port: int) -> list[Rule]:
    """Lima's full rule list: the two ssh ignores, the instance's rules, the fallback."""
    rules = [Rule(guest_ip="0.0.0.0", guest_range=(port, port), ignore=True, implicit=True)
             for port in (GUEST_SSH_PORT, ssh_local_port) if port]
    rules += [rule_of(f) for f in forwards]
    rules.append(Rule(implicit=True))
    return rules


def ignored_protocols(forwards: Sequence[PortForward]) -> tuple[bool, bool]:
    """(tcp, udp): whether leading ignore rules over every port silence the
    `not-forwarding` events of that protocol (Lima's ignoreTCP / ignoreUDP)."""
    tcp = udp = False
    for fwd in forwards:
        rule = rule_of(fwd)
        if not (rule.ignore and rule.guest_range == (1, 65535)):
            break
        tcp = tcp or rule.proto in ("tcp", "any")
        udp = udp or rule.proto in ("udp", "any")
    return tcp, udp


def _fits(rule: Rule, guest: _IPv) -> bool:
    rule_ip = _addr(rule.guest_ip)
    if guest.is_unspecified or guest == rule_ip:
        return True
    if guest == ipaddress.IPv6Address("::1") and rule_ip == ipaddress.IPv4Address(LOOPBACK4):
        return True
    return rule_ip.is_unspecified and not rule.guest_ip_must_be_zero


def matching_rule(rules: Sequence[Rule], listener: Listener) -> Rule | None:
    """The rule that decides `listener` (possibly an ignore rule), or None."""
    guest = _addr(listener.ip)
    for rule in rules:
        if rule.guest_socket:
            continue
        if rule.proto not in ("any", listener.proto):
            continue
        if not rule.guest_range[0] <= listener.port <= rule.guest_range[1]:
            continue
        if not _fits(rule, guest):
            continue
        if rule.ignore and guest.is_unspecified and not _addr(rule.guest_ip).is_unspecified:
            continue
        return rule
    return None


def host_target(rule: Rule, guest_port: int) -> HostTarget:
    if rule.host_socket:
        return HostTarget(socket=rule.host_socket)
    if guest_port == 0:  # the guest side is a socket: a single host port
        return HostTarget(ip=rule.host_ip, port=rule.host_range[0])
    return HostTarget(ip=rule.host_ip, port=guest_port + rule.host_range[0] - rule.guest_range[0])


def forward_for(rules: Sequence[Rule], listener: Listener) -> HostTarget | None:
    """Where `listener` is forwarded on the host, or None (ignored or no rule)."""
    rule = matching_rule(rules, listener)
    if rule is None or rule.ignore:
        return None
    return host_target(rule, listener.port)


def statically_forwarded(rules: Sequence[Rule], listener: Listener) -> bool:
    """Whether a static rule of the listener's protocol covers its port (Lima skips those:
    the static forward already holds the host port). Lima's static forwards are TCP only
    and it skips a listener of either protocol; limapy binds static UDP too, so only the
    rule's own protocols are skipped."""
    return any(r.static and not r.guest_socket and not r.ignore
               and r.proto in ("any", listener.proto)
               and r.guest_range[0] <= listener.port <= r.guest_range[1] for r in rules)


def static_targets(rules: Sequence[Rule]) -> list[tuple[Listener, HostTarget]]:
    """The forwards set up at start, before the guest agent reports anything: each port of
    every static rule (TCP and UDP as its proto says), mapped through the whole rule list
    like a listener would be."""
    out: list[tuple[Listener, HostTarget]] = []
    for rule in rules:
        if not rule.static or rule.guest_socket or rule.ignore:
            continue
        for port in range(rule.guest_range[0], rule.guest_range[1] + 1):
            for proto in (("tcp", "udp") if rule.proto == "any" else (rule.proto,)):
                listener = Listener(proto, normalize_ip(rule.guest_ip), port)
                target = forward_for(rules, listener)
                if target is not None:
                    out.append((listener, target))
    return out


def socket_rules(rules: Sequence[Rule]) -> list[tuple[str, HostTarget]]:
    """(guest socket, host target) of every guestSocket rule that is not `reverse`,
    forwarded once ssh is up."""
    return [(r.guest_socket, host_target(r, 0)) for r in rules
            if r.guest_socket and not r.ignore and not r.reverse]


def reverse_rules(rules: Sequence[Rule]) -> list[tuple[str, str]]:
    """(guest socket, host socket) of every `reverse` rule: the guest listens on the guest
    socket and each connection goes to the host socket (Lima's `ssh -R`)."""
    return [(r.guest_socket, r.host_socket) for r in rules
            if r.reverse and r.guest_socket and r.host_socket and not r.ignore]
