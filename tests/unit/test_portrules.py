"""Lima's portForwards rules (lima.drivers.portrules) over the whole rule table: every
field, rule order, ignore, ranges, sockets, static rules and the implicit rules; and the
specs that limapy's forwarder refuses (UDP, reverse) are refused at validation."""

from __future__ import annotations

from typing import Any

import pytest

from lima.drivers import portrules
from lima.drivers.portrules import HostTarget, Listener, Rule
from lima.schemas.spec import PortForward

SSH_LOCAL = 60022


def fwd(**kw: Any) -> PortForward:
    """A spec entry filled the way lima.schemas.defaults fills one."""
    kw.setdefault("proto", "tcp")
    kw.setdefault("guest_ip", "0.0.0.0" if kw.get("guest_ip_must_be_zero") else "127.0.0.1")
    kw.setdefault("guest_ip_must_be_zero", kw["guest_ip"] == "0.0.0.0")
    kw.setdefault("host_ip", "127.0.0.1")
    return PortForward(**kw)


def target(forwards: list[PortForward], ip: str, port: int, proto: str = "tcp") -> str | None:
    rules = portrules.build_rules(forwards, SSH_LOCAL)
    found = portrules.forward_for(rules, Listener(proto, portrules.normalize_ip(ip), port))
    return found.text() if found else None


# --- implicit rules ----------------------------------------------------------------------

@pytest.mark.parametrize("ip", ["127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1"])
def test_loopback_and_wildcard_listeners_go_to_the_same_port_on_host_loopback(ip: str) -> None:
    assert target([], ip, 8080) == "127.0.0.1:8080"


@pytest.mark.parametrize("ip", ["192.168.5.15", "127.0.0.2", "127.0.0.53", "fe80::1"])
def test_other_addresses_are_not_forwarded_by_default(ip: str) -> None:
    assert target([], ip, 8080) is None


@pytest.mark.parametrize("ip", ["0.0.0.0", "127.0.0.1", "::", "192.168.5.15"])
@pytest.mark.parametrize("port", [22, SSH_LOCAL])
def test_guest_ssh_port_and_ssh_local_port_are_never_forwarded(ip: str, port: int) -> None:
    assert target([], ip, port) is None
    # not even by a user rule that names it
    assert target([fwd(guest_port=port, host_port=2222)], ip, port) is None


def test_implicit_fallback_covers_udp_as_lima_does() -> None:
    assert target([], "127.0.0.1", 5353, "udp") == "127.0.0.1:5353"


def test_rule_list_shape() -> None:
    rules = portrules.build_rules([fwd(guest_port=80)], SSH_LOCAL)
    assert [r.implicit for r in rules] == [True, True, False, True]
    assert rules[0] == Rule(guest_ip="0.0.0.0", guest_range=(22, 22), ignore=True, implicit=True)
    assert rules[-1] == Rule(implicit=True)


# --- fields -----------------------------------------------------------------------------

def test_host_port_and_host_ip() -> None:
    rules = [fwd(guest_port=80, host_port=8080, host_ip="0.0.0.0")]
    assert target(rules, "127.0.0.1", 80) == "0.0.0.0:8080"
    assert target(rules, "127.0.0.1", 81) == "127.0.0.1:81"  # the fallback


def test_ranges_keep_the_offset() -> None:
    rules = [fwd(guest_port_range=(4000, 4999), host_port_range=(14000, 14999))]
    assert target(rules, "127.0.0.1", 4000) == "127.0.0.1:14000"
    assert target(rules, "0.0.0.0", 4321) == "127.0.0.1:14321"
    assert target(rules, "127.0.0.1", 4999) == "127.0.0.1:14999"
    assert target(rules, "127.0.0.1", 5000) == "127.0.0.1:5000"


def test_guest_ip_specific_address() -> None:
    rules = [fwd(guest_ip="127.0.0.2", host_ip="127.0.0.2")]
    assert target(rules, "127.0.0.2", 9000) == "127.0.0.2:9000"
    # a wildcard listener fits every rule: the first one wins
    assert target(rules, "0.0.0.0", 9000) == "127.0.0.2:9000"
    assert target(rules, "127.0.0.1", 9000) == "127.0.0.1:9000"


def test_guest_ip_zero_must_be_zero_by_default() -> None:
    rules = [fwd(guest_ip="0.0.0.0", guest_port=7443, host_ip="0.0.0.0")]
    assert target(rules, "0.0.0.0", 7443) == "0.0.0.0:7443"
    assert target(rules, "::", 7443) == "0.0.0.0:7443"
    # an address listener does not fit: the fallback takes 127.0.0.1
    assert target(rules, "127.0.0.1", 7443) == "127.0.0.1:7443"
    assert target(rules, "192.168.5.15", 7443) is None


def test_guest_ip_zero_with_must_be_zero_false_matches_any_address() -> None:
    rules = [fwd(guest_ip="0.0.0.0", guest_ip_must_be_zero=False, guest_port=7443,
                 host_ip="0.0.0.0")]
    for ip in ("0.0.0.0", "127.0.0.1", "192.168.5.15", "::1"):
        assert target(rules, ip, 7443) == "0.0.0.0:7443"


def test_ipv6_loopback_fits_rules_for_ipv4_loopback() -> None:
    rules = [fwd(guest_port=3000, host_port=3001)]
    assert target(rules, "::1", 3000) == "127.0.0.1:3001"


def test_proto_filters_rules() -> None:
    rules = [fwd(guest_port=53, host_port=5300, proto="tcp")]
    assert target(rules, "127.0.0.1", 53) == "127.0.0.1:5300"
    assert target(rules, "127.0.0.1", 53, "udp") == "127.0.0.1:53"  # the fallback (any)
    any_rule = [fwd(guest_port=53, host_port=5300, proto="any")]
    assert target(any_rule, "127.0.0.1", 53, "udp") == "127.0.0.1:5300"


def test_host_socket_replaces_the_host_address() -> None:
    rules = [fwd(guest_port=5432, host_socket="/tmp/pg.sock")]
    assert target(rules, "127.0.0.1", 5432) == "/tmp/pg.sock"


# --- order and ignore --------------------------------------------------------------------

def test_first_matching_rule_wins() -> None:
    rules = [fwd(guest_port=8080, host_port=1), fwd(guest_port=8080, host_port=2)]
    assert target(rules, "127.0.0.1", 8080) == "127.0.0.1:1"
    reordered = [fwd(guest_port_range=(8000, 8999), host_port_range=(18000, 18999)),
                 fwd(guest_port=8080, host_port=2)]
    assert target(reordered, "127.0.0.1", 8080) == "127.0.0.1:18080"


def test_ignore_stops_the_search() -> None:
    rules = [fwd(guest_port=8080, ignore=True), fwd(guest_port=8080, host_port=9)]
    assert target(rules, "127.0.0.1", 8080) is None
    assert target(rules, "127.0.0.1", 8081) == "127.0.0.1:8081"


def test_ignore_for_an_address_does_not_stop_a_wildcard_listener() -> None:
    rules = [fwd(guest_port=8080, ignore=True), fwd(guest_port=8080, host_port=9)]
    # the ignore rule names 127.0.0.1: a listener on 0.0.0.0 goes on to the next rule
    assert target(rules, "0.0.0.0", 8080) == "127.0.0.1:9"


def test_ignore_everything_on_zero_ignores_only_zero_listeners() -> None:
    rules = [fwd(guest_ip="0.0.0.0", proto="any", ignore=True)]
    assert target(rules, "0.0.0.0", 8080) is None
    assert target(rules, "0.0.0.0", 5353, "udp") is None
    assert target(rules, "127.0.0.1", 8080) == "127.0.0.1:8080"


def test_ignore_any_address_with_must_be_zero_false() -> None:
    rules = [fwd(guest_ip="0.0.0.0", guest_ip_must_be_zero=False, ignore=True)]
    assert target(rules, "127.0.0.1", 8080) is None
    assert target(rules, "0.0.0.0", 8080) is None


def test_ignored_protocols_follow_leading_full_range_ignores() -> None:
    assert portrules.ignored_protocols([]) == (False, False)
    assert portrules.ignored_protocols([fwd(ignore=True, proto="any")]) == (True, True)
    assert portrules.ignored_protocols([fwd(ignore=True, proto="udp")]) == (False, True)
    # not leading: Lima looks only at the head of the list
    assert portrules.ignored_protocols([fwd(guest_port=80), fwd(ignore=True)]) == (False, False)
    assert portrules.ignored_protocols([fwd(ignore=True, guest_port=80)]) == (False, False)


# --- sockets, static ------------------------------------------------------------------------

def test_guest_socket_rules_never_match_listeners() -> None:
    rules = [fwd(guest_socket="/run/x.sock", host_port=8080)]
    assert target(rules, "127.0.0.1", 8080) == "127.0.0.1:8080"  # the fallback, not the rule
    built = portrules.build_rules(rules, SSH_LOCAL)
    assert portrules.socket_rules(built) == [("/run/x.sock", HostTarget("127.0.0.1", 8080))]


def test_socket_to_socket() -> None:
    built = portrules.build_rules([fwd(guest_socket="/run/a", host_socket="/tmp/b")], 0)
    assert portrules.socket_rules(built) == [("/run/a", HostTarget(socket="/tmp/b"))]


def test_static_rules_are_forwarded_from_the_rule_and_skip_listeners() -> None:
    rules = portrules.build_rules(
        [fwd(guest_port=8888, host_port=18888, static=True), fwd(guest_port=9000)], SSH_LOCAL)
    assert portrules.static_targets(rules) == [
        (Listener("tcp", "127.0.0.1", 8888), HostTarget("127.0.0.1", 18888))]
    assert portrules.statically_forwarded(rules, Listener("tcp", "0.0.0.0", 8888))
    assert not portrules.statically_forwarded(rules, Listener("tcp", "0.0.0.0", 9000))


def test_static_rule_for_the_ssh_port_is_still_ignored() -> None:
    rules = portrules.build_rules([fwd(guest_port=22, host_port=2222, static=True)], 0)
    assert portrules.static_targets(rules) == []


def test_rule_of_fills_ranges_from_ports() -> None:
    r = portrules.rule_of(fwd(guest_port=80, host_port=8080))
    assert (r.guest_range, r.host_range) == ((80, 80), (8080, 8080))
    r = portrules.rule_of(fwd())
    assert (r.guest_range, r.host_range) == ((1, 65535), (1, 65535))


def test_guest_addr_text() -> None:
    assert Listener("tcp", "::1", 80).guest_addr() == "[::1]:80"
    assert Listener("tcp", "127.0.0.1", 80).guest_addr() == "127.0.0.1:80"


# --- validation: what the forwarder cannot do is refused, not ignored -------------------

BASE = "images:\n- location: https://example.org/a.img\n  arch: x86_64\n"


def errors(extra: str) -> list[tuple[str, int, str]]:
    from lima.schemas.lines import from_loaded
    from lima.schemas.validate import check
    from lima.schemas.yamlload import load_yaml

    loaded = load_yaml(BASE + extra, "t.yaml")
    found = check(loaded.data, from_loaded(loaded.lines, "t.yaml"), "t.yaml")
    return [(p.path, p.line, p.message) for p in found if not p.warning]


@pytest.mark.parametrize(("extra", "path", "line", "words"), [
    ("portForwards:\n- guestSocket: /a\n  hostSocket: /tmp/b\n  proto: udp\n",
     "portForwards[0].proto", 7, "unix socket"),
    ("portForwards:\n- guestPort: 80\n  hostSocket: /tmp/b\n  proto: udp\n",
     "portForwards[0].proto", 7, "unix socket"),
    ("portForwards:\n- guestPort: 53\n  reverse: true\n", "portForwards[0].reverse", 6,
     "both guestSocket and hostSocket"),
    ("portForwards:\n- guestPort: 53\n  proto: sctp\n", "portForwards[0].proto", 6,
     "sctp"),
])
def test_what_cannot_be_forwarded_is_refused(extra: str, path: str, line: int,
                                             words: str) -> None:
    found = errors(extra)
    assert [(p, n) for p, n, _ in found] == [(path, line)]
    assert words in found[0][2]


@pytest.mark.parametrize("extra", [
    "portForwards:\n- guestIP: 0.0.0.0\n  proto: any\n  ignore: true\n",
    "portForwards:\n- guestPort: 53\n  proto: udp\n  ignore: true\n",
    "portForwards:\n- guestPort: 80\n  proto: tcp\n  static: true\n",
    # formerly refused: UDP, reverse sockets, static ranges
    "portForwards:\n- guestPort: 53\n  proto: udp\n",
    "portForwards:\n- guestPort: 53\n  proto: any\n",
    "portForwards:\n- guestSocket: /a\n  hostSocket: /tmp/b\n  reverse: true\n",
    "portForwards:\n- guestPortRange: [80, 81]\n  hostPortRange: [8080, 8081]\n"
    "  static: true\n",
    "portForwards:\n- guestSocket: /a\n  hostSocket: /tmp/b\n  proto: udp\n  ignore: true\n",
])
def test_supported_rules_pass(extra: str) -> None:
    assert errors(extra) == []


# --- UDP entries ------------------------------------------------------------------------

def test_udp_listeners_follow_the_fallback_and_the_rules() -> None:
    # Lima >= 2.0: the fallback rule is proto "any", so UDP on loopback is forwarded
    assert target([], "127.0.0.1", 5353, "udp") == "127.0.0.1:5353"
    assert target([], "0.0.0.0", 5353, "udp") == "127.0.0.1:5353"
    # a systemd-resolved style stub on 127.0.0.53 matches no rule (Lima: not-forwarding)
    assert target([], "127.0.0.53", 53, "udp") is None
    udp_only = [fwd(guest_port=53, host_port=5300, proto="udp")]
    assert target(udp_only, "127.0.0.1", 53, "udp") == "127.0.0.1:5300"
    assert target(udp_only, "127.0.0.1", 53, "tcp") == "127.0.0.1:53"  # the fallback
    tcp_only = [fwd(guest_port=53, host_port=5300, proto="tcp")]
    assert target(tcp_only, "127.0.0.1", 53, "udp") == "127.0.0.1:53"
    ignore_udp = [fwd(guest_ip="0.0.0.0", guest_ip_must_be_zero=False, proto="udp",
                      ignore=True)]
    assert target(ignore_udp, "127.0.0.1", 5353, "udp") is None
    assert target(ignore_udp, "127.0.0.1", 5353, "tcp") == "127.0.0.1:5353"


def test_the_ssh_ignores_cover_udp_too() -> None:
    rules = portrules.build_rules([], 60022)
    for port in (22, 60022):
        listener = Listener("udp", "0.0.0.0", port)
        assert portrules.forward_for(rules, listener) is None


def test_static_range_binds_every_port_of_each_proto() -> None:
    rules = portrules.build_rules(
        [fwd(guest_port_range=(7000, 7002), host_port_range=(17000, 17002), static=True,
             proto="any")], 0)
    got = [(lst.proto, lst.port, t.port) for lst, t in portrules.static_targets(rules)]
    assert got == [("tcp", 7000, 17000), ("udp", 7000, 17000), ("tcp", 7001, 17001),
                   ("udp", 7001, 17001), ("tcp", 7002, 17002), ("udp", 7002, 17002)]


def test_statically_forwarded_is_per_protocol() -> None:
    rules = portrules.build_rules([fwd(guest_port=7000, static=True, proto="tcp")], 0)
    assert portrules.statically_forwarded(rules, Listener("tcp", "127.0.0.1", 7000))
    assert not portrules.statically_forwarded(rules, Listener("udp", "127.0.0.1", 7000))


def test_reverse_rules_are_kept_apart_from_socket_rules() -> None:
    rules = portrules.build_rules([
        fwd(guest_socket="/run/a.sock", host_socket="/tmp/a.sock", reverse=True),
        fwd(guest_socket="/run/b.sock", host_socket="/tmp/b.sock"),
    ], 0)
    assert portrules.reverse_rules(rules) == [("/run/a.sock", "/tmp/a.sock")]
    assert [g for g, _ in portrules.socket_rules(rules)] == ["/run/b.sock"]
