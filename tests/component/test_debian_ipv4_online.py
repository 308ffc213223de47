"""build:debian-12's stand-in for systemd-networkd-wait-online (lima/drivers/images/
build_debian.py, IPV4_ONLINE), run with bash on the host against a fake route table:
online once an IPv4 default route exists, not once IPv6 router discovery is done."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from lima.drivers.images import build_debian

pytestmark = pytest.mark.component

HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow"
          "\tIRTT\n")
SUBNET = "eth0\t0005A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
DEFAULT = "eth0\t00000000\t0205A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"


def run(tmp_path: Path, table: Path, timeout: int = 120,
        path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    script = tmp_path / "ipv4-online"
    script.write_text(build_debian.IPV4_ONLINE)
    env = {"PATH": path, "LIMAPY_PROC_NET_ROUTE": str(table),
           "LIMAPY_ONLINE_TIMEOUT": str(timeout)}
    return subprocess.run(["/bin/bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_online_with_a_default_route(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(HEADER + SUBNET + DEFAULT)
    result = run(tmp_path, table)
    assert result.returncode == 0 and result.stderr == ""


def test_waits_for_the_default_route(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(HEADER + SUBNET)  # the address is there, the route not yet

    def add_route() -> None:
        time.sleep(0.5)
        table.write_text(HEADER + SUBNET + DEFAULT)

    writer = threading.Thread(target=add_route)
    started = time.monotonic()
    writer.start()
    result = run(tmp_path, table)
    writer.join()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.5


def test_waits_without_starting_a_program(tmp_path: Path) -> None:
    """About ten looks at the table, and not one `sleep` (or other program) between them."""
    table = tmp_path / "route"
    table.write_text(HEADER + SUBNET)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("sleep", "cat"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >>{calls}\n/bin/{name} \"$@\"\n")
        (bin_dir / name).chmod(0o755)

    def add_route() -> None:
        time.sleep(0.5)
        table.write_text(HEADER + SUBNET + DEFAULT)

    writer = threading.Thread(target=add_route)
    writer.start()
    result = run(tmp_path, table, path=f"{bin_dir}:/usr/bin:/bin")
    writer.join()
    assert result.returncode == 0, result.stderr
    assert not calls.exists(), calls.read_text()


def test_fails_after_its_timeout_without_one(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(HEADER + SUBNET)
    result = run(tmp_path, table, timeout=1)
    assert result.returncode == 1
    assert result.stderr == "ipv4-online: no IPv4 default route after 1 s\n"


def test_wait_online_runs_it() -> None:
    conf = build_debian.FILES[
        "etc/systemd/system/systemd-networkd-wait-online.service.d/limapy-ipv4.conf"]
    assert conf[1].splitlines()[-1] == "ExecStart=/usr/lib/limapy/ipv4-online"
    assert build_debian.FILES["usr/lib/limapy/ipv4-online"] == (0o755, build_debian.IPV4_ONLINE)
