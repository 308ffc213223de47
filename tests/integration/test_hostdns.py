"""hostResolver on the tiny guest: the host agent's DNS server answers the guest.

The guest (restrictNetwork: true, so nothing reaches the network) resolves through
/etc/resolv.conf, which 05-host-dns.sh points at 192.168.5.4 over TCP; QEMU's guestfwd
joins those connections to the host agent's dns.sock. busybox `ping` resolves with the
static glibc's resolver and prints the address before it sends anything, so a name that
resolves shows as `PING NAME (ADDRESS)` whether or not the address answers.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Limactl

pytestmark = pytest.mark.integration

HOSTS = """hostResolver:
  hosts:
    myhost.example: 10.1.2.3
    alias.example: host.lima.internal
"""


def resolve(limactl: Limactl, name: str) -> str | None:
    out = limactl("shell", "t", "ping", "-c1", "-W1", name, check=False)
    m = re.search(rf"PING {re.escape(name)} \(([0-9.]+)\)", out.stdout + out.stderr)
    return m.group(1) if m else None


def test_host_lima_internal_and_hosts_entries_resolve(limactl: Limactl,
                                                     tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    f.write_text(f.read_text() + HOSTS)
    limactl("apply", str(f), timeout=600)
    conf = limactl("shell", "t", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 192.168.5.4" in conf and "options use-vc" in conf
    assert (limactl.home / "t" / "dns.sock").is_socket()

    assert resolve(limactl, "host.lima.internal") == "192.168.5.2"
    assert resolve(limactl, "HOST.LIMA.INTERNAL") == "192.168.5.2"
    assert resolve(limactl, "myhost.example") == "10.1.2.3"
    assert resolve(limactl, "alias.example") == "192.168.5.2"
    # Restricted network: nothing is forwarded; an unknown name fails at once.
    start = time.monotonic()
    assert resolve(limactl, "nowhere.example") is None
    assert time.monotonic() - start < 5
    # Queries keep flowing on the one guestfwd stream.
    for _ in range(5):
        assert resolve(limactl, "host.lima.internal") == "192.168.5.2"

    limactl("stop", "t", timeout=300)
    assert not (limactl.home / "t" / "dns.sock").exists()


def test_disabled_host_resolver_adds_no_forward(limactl: Limactl, tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    shutil.copy(REPO / "examples" / "tiny.yaml", f)
    f.write_text(f.read_text() + "hostResolver:\n  enabled: false\n")
    limactl("apply", str(f), timeout=600)
    conf = limactl("shell", "t", "cat", "/etc/resolv.conf").stdout
    assert "192.168.5.4" not in conf
    argv = json.loads((limactl.home / "t" / "ha.qemu-argv.json").read_text())
    assert not any("guestfwd" in a for a in argv)
    # As in Lima, /etc/hosts still has host.lima.internal.
    hosts = limactl("shell", "t", "cat", "/etc/hosts").stdout
    assert "192.168.5.2\thost.lima.internal" in hosts
    assert resolve(limactl, "host.lima.internal") == "192.168.5.2"
    limactl("stop", "t", timeout=300)
