"""hostResolver's answers (lima.drivers.hostagent.dns.HostResolver): pure, lookups injected."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from lima.drivers.hostagent.dns import HostResolver, ResolverConfig, canonical

CONFIG = ResolverConfig(
    instance="vm",
    hosts={"MyHost.Example": "10.1.2.3", "alias.example": "host.lima.internal",
           "chain.example": "alias.example", "loop1.example": "loop2.example",
           "loop2.example": "loop1.example", "v6.example": "fd00::1",
           "host.lima.internal": "10.9.9.9"},
)


def ask(resolver: HostResolver, name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.parse(resolver.answer(DNSRecord.question(name, qtype).pack()))


def answers(reply: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr]


def offline() -> HostResolver:
    def lookup(name: str, ipv6: bool) -> list[str]:
        raise OSError(f"{name}: no network in this test")

    return HostResolver(CONFIG, lookup=lookup, forward=None)


def test_lima_names_win_over_the_users() -> None:
    r = offline()
    assert answers(ask(r, "host.lima.internal")) == [
        ("host.lima.internal.", "A", "192.168.5.2")]
    assert answers(ask(r, "lima-vm")) == [("lima-vm.", "A", "192.168.5.15")]


def test_hosts_entries_case_insensitive_and_aliases_followed() -> None:
    r = offline()
    assert answers(ask(r, "myhost.EXAMPLE")) == [("myhost.EXAMPLE.", "A", "10.1.2.3")]
    assert answers(ask(r, "chain.example")) == [("chain.example.", "A", "192.168.5.2")]
    assert answers(ask(r, "alias.example", "CNAME")) == [
        ("alias.example.", "CNAME", "host.lima.internal.")]
    assert r.follow("loop1.example") in (canonical("loop1.example"), canonical("loop2.example"))


def test_aaaa_is_nodata_unless_ipv6() -> None:
    reply = ask(offline(), "v6.example", "AAAA")
    assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])
    six = HostResolver(ResolverConfig("vm", hosts=CONFIG.hosts, ipv6=True), lookup=None)
    assert answers(ask(six, "v6.example", "AAAA")) == [("v6.example.", "AAAA", "fd00::1")]
    assert ask(six, "v6.example", "A").rr == []


def test_unknown_name_gets_an_empty_answer_at_once_when_nothing_is_forwarded() -> None:
    reply = ask(offline(), "nowhere.example")
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []
    assert reply.header.qr == 1  # an answer, not silence: the guest does not wait


def test_forwarding_when_allowed_and_never_when_restricted() -> None:
    calls: list[str] = []

    def lookup(name: str, ipv6: bool) -> list[str]:
        calls.append(name)
        return ["203.0.113.7"]

    def forward(query: bytes) -> bytes:
        calls.append("forward")
        return DNSRecord.parse(query).reply().pack()

    open_net = HostResolver(CONFIG, lookup=lookup, forward=forward)
    assert answers(ask(open_net, "www.example")) == [("www.example.", "A", "203.0.113.7")]
    ask(open_net, "example", "MX")
    assert calls == ["www.example.", "forward"]
    calls.clear()
    closed = HostResolver(ResolverConfig("vm", forward=False), lookup=lookup, forward=forward)
    assert ask(closed, "www.example").rr == []
    assert ask(closed, "example", "MX").rr == []
    assert calls == []


def test_config_round_trips_json() -> None:
    back = ResolverConfig.from_json(CONFIG.to_json())
    assert back == CONFIG
    with pytest.raises(KeyError):
        ResolverConfig.from_json({})


def _netdev(spec: object, inst: Path) -> list[str]:
    from lima.drivers.qemu import HostFiles, qemu_argv

    (inst / "kernel").write_bytes(b"k")
    return qemu_argv(spec, inst, ssh_port=2222, accel="tcg",  # type: ignore[arg-type]
                     binary=["qemu-system-x86_64"], host=HostFiles())


def test_guest_reaches_the_server_through_a_guestfwd(tmp_path: Path) -> None:
    from lima.drivers import cloudconfig
    from lima.schemas.spec import QemuOptions
    from tests.unit.cidata_fixtures import make_spec

    spec = make_spec(host_resolver_enabled=True, qemu=QemuOptions(restrict_network=True))
    argv = _netdev(spec, tmp_path)
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.endswith(",restrict=on,guestfwd=tcp:192.168.5.4:53-chardev:char-dns")
    chardev = argv[argv.index("-chardev", argv.index("-chardev")) + 1]
    assert f"socket,id=char-dns,path={tmp_path / 'dns.sock'},reconnect=1" in argv
    assert chardev  # the chardev is defined on the command line, not inside the netdev
    env = cloudconfig.lima_env(spec, iid="i")
    assert "LIMA_CIDATA_HOST_RESOLVER=192.168.5.4\n" in env

    for off in (dataclasses.replace(spec, host_resolver_enabled=False),
                dataclasses.replace(spec, dns=("10.0.0.1",))):
        argv = _netdev(off, tmp_path)
        assert not any("guestfwd" in a or "char-dns" in a for a in argv)
        assert "LIMA_CIDATA_HOST_RESOLVER=\n" in cloudconfig.lima_env(off, iid="i")
