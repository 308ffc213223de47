"""hostResolver: the host agent's DNS server for its guest.

Answers `host.lima.internal` (the slirp gateway, i.e. the host), `lima-NAME` (the guest)
and `hostResolver.hosts` (an address, or another name to follow), as Lima's host agent
does; AAAA gets an empty NOERROR answer unless `hostResolver.ipv6`. Other names go to the
host's resolver (getaddrinfo for A/AAAA, the nameservers of /etc/resolv.conf for the rest)
unless the instance's network is restricted: a restricted guest must reach nothing, so
they get an empty answer at once instead.

How queries reach it: Lima points the guest at slirp's DNS address and DNATs it to the
gateway, which slirp maps to the host's loopback. With `restrictNetwork` slirp drops
every guest packet to the host except TCP to a `guestfwd` (and no guestfwd may sit on the
gateway or DNS address), so limapy uses one route for both kinds of network: QEMU's
`guestfwd=tcp:192.168.5.4:53-chardev:char-dns` (lima.drivers.qemu) joins the guest's TCP
connections to that address to a unix socket chardev, `dns.sock` in the instance
directory, which this server listens on; the boot script 05-host-dns.sh writes
`nameserver 192.168.5.4` and `options use-vc` (DNS over TCP) into /etc/resolv.conf. The
chardev is one byte stream for all guest connections, so the server reads length-prefixed
queries off it in order and answers each in turn; QEMU hands the answers to the newest
connection, which is the one waiting (glibc's resolver asks one connection at a time).

`HostResolver.answer()` is pure (DNS in, DNS out; lookups injected); `DNSServer` serves it
on the socket in a thread; lima.drivers.hostagent.daemon starts and stops it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import AAAA, CNAME, QTYPE, RR, A, DNSRecord  # type: ignore[import-untyped]

from lima.drivers.guest import SLIRP_GATEWAY, SLIRP_IP_ADDRESS

log = logging.getLogger(__name__)

HOST_NAME = "host.lima.internal"
TTL = 5  # Lima's

# (name, want IPv6) -> addresses; raises OSError when the name does not resolve.
Lookup = Callable[[str, bool], list[str]]
# A raw DNS query -> the raw answer of an upstream server, or None.
Forward = Callable[[bytes], bytes | None]


def canonical(name: str) -> str:
    """Lower case with the trailing dot, as names are compared (RFC 4343)."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


@dataclass(frozen=True)
class ResolverConfig:
    """What the host agent needs to serve one guest; travels as JSON on its command line."""

    instance: str
    hosts: Mapping[str, str] = field(default_factory=dict)
    ipv6: bool = False
    forward: bool = True  # False on a restricted network: the host's resolver is not asked

    def static_hosts(self) -> dict[str, str]:
        """The user's hosts plus Lima's two names (which win, as in Lima)."""
        from lima.names import guest_hostname

        out = dict(self.hosts)
        out[HOST_NAME] = SLIRP_GATEWAY
        out[guest_hostname(self.instance)] = SLIRP_IP_ADDRESS
        return out

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "hosts": dict(self.hosts), "ipv6": self.ipv6,
                "forward": self.forward}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolverConfig:
        return cls(instance=str(data["instance"]),
                   hosts={str(k): str(v) for k, v in dict(data.get("hosts") or {}).items()},
                   ipv6=bool(data.get("ipv6")), forward=bool(data.get("forward", True)))


def host_lookup(name: str, ipv6: bool) -> list[str]:
    """The host's resolver (its /etc/hosts included), as Go's LookupIP in Lima."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    infos = socket.getaddrinfo(name.rstrip("."), None, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolv_conf_servers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [w[1] for w in (line.split() for line in lines)
            if len(w) >= 2 and w[0] == "nameserver"]


def upstream_forward(servers: list[str], timeout: float = 3.0) -> Forward:
    """Send a query to the host's nameservers, over UDP then TCP (Lima's handleDefault)."""

    def forward(query: bytes) -> bytes | None:
        request = DNSRecord.parse(query)
        for tcp in (False, True):
            for server in servers:
                try:
                    return bytes(request.send(server, 53, tcp=tcp, timeout=timeout))
                except (OSError, ValueError) as exc:
                    log.debug("DNS upstream %s (%s): %s", server, "tcp" if tcp else "udp", exc)
        return None

    return forward


class HostResolver:
    """Answers one DNS query the way Lima's host agent does."""

    def __init__(self, config: ResolverConfig, *, lookup: Lookup | None = host_lookup,
                 forward: Forward | None = None) -> None:
        self.ipv6 = config.ipv6
        self.lookup = lookup if config.forward else None
        self.forward = forward if config.forward else None
        self.addresses: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        for host, value in config.static_hosts().items():
            try:
                self.addresses[canonical(host)] = str(ipaddress.ip_address(value))
            except ValueError:
                self.aliases[canonical(host)] = canonical(value)

    def follow(self, name: str) -> str:
        """The end of the alias chain from `name` (a cycle stops where it closes)."""
        name = canonical(name)
        seen: set[str] = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def _addresses(self, name: str, want6: bool) -> list[str] | None:
        target = self.follow(name)
        if target in self.addresses:
            return [self.addresses[target]]
        if self.lookup is None:
            return None
        try:
            return self.lookup(target, want6)
        except OSError as exc:
            log.debug("DNS lookup of %s failed: %s", target, exc)
            return None

    def answer(self, query: bytes) -> bytes:
        request = DNSRecord.parse(query)
        reply = request.reply()
        handled = False
        for q in request.questions:
            qname = str(q.qname)
            if q.qtype == QTYPE.AAAA and not self.ipv6:
                handled = True  # NODATA: NOERROR and no records (RFC 2308 2.2)
                continue
            if q.qtype in (QTYPE.A, QTYPE.AAAA):
                want6 = q.qtype == QTYPE.AAAA
                for addr in self._addresses(qname, want6) or []:
                    ip = ipaddress.ip_address(addr)
                    if want6 and ip.version == 6:
                        reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA(addr), ttl=TTL))
                        handled = True
                    elif not want6 and ip.version == 4:
                        reply.add_answer(RR(qname, QTYPE.A, rdata=A(addr), ttl=TTL))
                        handled = True
            elif q.qtype == QTYPE.CNAME:
                target = self.follow(qname)
                if target != canonical(qname):
                    reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(target), ttl=TTL))
                    handled = True
        if handled:
            return bytes(reply.pack())
        if self.forward is not None:
            upstream = self.forward(query)
            if upstream is not None:
                return upstream
        return bytes(request.reply().pack())


class DNSServer:
    """Serves a HostResolver on a unix stream socket: length-prefixed DNS (RFC 1035 4.2.2)."""

    def __init__(self, resolver: HostResolver, path: Path) -> None:
        self.resolver = resolver
        self.path = path
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(4)
        sock.settimeout(0.2)
        self._sock = sock
        threading.Thread(target=self._accept, name="dns", daemon=True).start()
        log.info("DNS server for the guest on %s", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="dns-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(None)
            while not self._stop.is_set():
                head = _read_exact(conn, 2)
                if head is None:
                    return
                query = _read_exact(conn, struct.unpack(">H", head)[0])
                if query is None:
                    return
                try:
                    out = self.resolver.answer(query)
                except Exception as exc:  # a malformed query must not end the stream
                    log.debug("DNS query not answered: %s", exc)
                    continue
                try:
                    conn.sendall(struct.pack(">H", len(out)) + out)
                except OSError:
                    return


def _read_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def start_server(inst_dir: Path, config: ResolverConfig) -> DNSServer:
    """The daemon's hook: serve `config` on inst_dir/dns.sock (before qemu connects)."""
    from lima import paths

    forward = upstream_forward(resolv_conf_servers()) if config.forward else None
    server = DNSServer(HostResolver(config, forward=forward), inst_dir / paths.DNS_SOCK)
    server.start()
    return server
