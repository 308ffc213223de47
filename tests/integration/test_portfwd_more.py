"""The port forwards added after TCP, on the tiny guest through the real CLI: a static
guestPortRange (every port bound before anything listens), a UDP listener, and a
`reverse` socket forward.

What tiny can show: build:tiny is busybox + dropbear with `restrictNetwork: true`. Its
busybox `nc` has no `-u` (and no `-U`), so no busybox applet answers arbitrary datagrams;
libslirp under restrict=on drops every datagram the guest sends anyway; and the guest has
no python3 for the UDP relay. So on tiny a UDP listener (busybox `udhcpd`, the one UDP
server applet) must end in a `failed` event that says python3 is missing, never in a
silent drop. dropbear has no streamlocal forwarding, so a reverse forward must be a
`failed` event with ssh's reason, the instance stays Running, and the `ssh -R` child ends
with the instance. The answering UDP relay and a working reverse socket need the Debian
guest (python3, OpenSSH): see SHARED-DEBIAN.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lima.drivers.hostagent.udprelay import NO_PYTHON
from tests.component.test_portfwd_more import can_bind_udp
from tests.integration.conftest import REPO, Limactl, _cmdline
from tests.integration.test_portfwd import free_port, port_events, refused, talk, until


def ssh_children(needle: str) -> list[int]:
    """Live processes whose command line holds `needle` (the -R argument)."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and needle in _cmdline(int(p.name))
            and _cmdline(int(p.name)).startswith("ssh ")]


def neighbours() -> int:
    """A port P with P, P+1 and P+2 free on the host."""
    for _ in range(50):
        port = free_port()
        if port < 65533 and all(refused(port + i) for i in (1, 2)):
            return port
    raise AssertionError("no three neighbouring free ports")


def test_tiny_static_range_udp_and_reverse(limactl: Limactl, tmp_path: Path) -> None:
    guest_base, host_base = neighbours(), neighbours()
    udp_host = free_port()
    host_sock = tmp_path / "h.sock"
    guest_sock = "/tmp/rev.sock"
    f = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    f.write_text(f.read_text() + (
        "portForwards:\n"
        f"- guestPortRange: [{guest_base}, {guest_base + 2}]\n"
        f"  hostPortRange: [{host_base}, {host_base + 2}]\n"
        "  static: true\n"
        "- guestIP: 0.0.0.0\n  guestPort: 67\n"
        f"  hostPort: {udp_host}\n  proto: udp\n"
        f"- guestSocket: {guest_sock}\n  hostSocket: {host_sock}\n  reverse: true\n"
    ))
    limactl("apply", str(f), timeout=300)
    home = limactl.home

    # static range: all three host ports are bound from the start, TCP and UDP (proto
    # defaults to "any"); the UDP relay waits for a datagram, so tiny reports no failure
    events = port_events(home, "t")
    for i in range(3):
        for proto in ("tcp", "udp"):
            assert {"type": "forwarding", "protocol": proto,
                    "guestAddr": f"127.0.0.1:{guest_base + i}",
                    "hostAddr": f"127.0.0.1:{host_base + i}"} in events
        assert not refused(host_base + i)
        assert not can_bind_udp(host_base + i)
    for i in (0, 2):
        limactl("shell", "t", "sh", "-c",
                f"setsid nc -ll -p {guest_base + i} -e echo port{i} "
                "</dev/null >/dev/null 2>&1 &")
    assert until(lambda: talk(host_base) == b"port0\n", "the first port of the range", 20)
    assert until(lambda: talk(host_base + 2) == b"port2\n", "the last port of the range", 20)
    # the static forward owns those ports: the listeners are not forwarded a second time
    bad = [e for e in port_events(home, "t")
           if e["type"] == "failed" and e["guestAddr"].startswith("127.0.0.1:")]
    assert bad == []

    # UDP on tiny: udhcpd listens on 0.0.0.0:67; no python3 for the relay -> a clear failure
    limactl("shell", "t", "sh", "-c",
            "printf 'interface eth0\\nstart 192.168.5.100\\nend 192.168.5.110\\n' "
            ">/tmp/udhcpd.conf && : >/tmp/udhcpd.leases && "
            "sudo setsid udhcpd -f /tmp/udhcpd.conf </dev/null >/dev/null 2>&1 &")
    failed = until(lambda: [e for e in port_events(home, "t")
                            if e["type"] == "failed" and e["protocol"] == "udp"],
                   "the UDP failed event", 30)
    assert failed[0]["guestAddr"] == "0.0.0.0:67"
    assert failed[0]["hostAddr"] == f"127.0.0.1:{udp_host}"
    assert failed[0]["error"] == NO_PYTHON

    # reverse: dropbear refuses streamlocal forwarding -> a failed event with ssh's reason
    rev = until(lambda: [e for e in port_events(home, "t")
                         if e["type"] == "failed" and e["guestAddr"] == guest_sock],
                "the reverse forward's failed event", 30)
    assert rev[0]["hostAddr"] == str(host_sock)
    assert "forwarding failed" in rev[0]["error"] or "refused" in rev[0]["error"]
    assert json.loads(limactl("list", "--format", "json", "t").stdout)["status"] == "Running"

    # stop: every forward and the ssh -R child end with the host agent
    limactl("stop", "t", timeout=120)
    assert ssh_children(f"{guest_sock}:{host_sock}") == []
    assert all(refused(host_base + i) for i in range(3))
