"""The two guest agents (lima/assets/cidata/util): the busybox/dash one reads /proc/net
tables like the python3 one, and both report in the protocol the host side parses
(lima.drivers.hostagent.portfwd.parse_report). The python3 agent's sock_diag listing is
checked against real sockets of this host."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

from lima.drivers.hostagent.portfwd import parse_report
from lima.drivers.portrules import Listener

UTIL = Path(__file__).resolve().parents[2] / "lima" / "assets" / "cidata" / "util"
BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")
APPLETS = ["sh", "awk", "mkfifo", "mv", "rm", "mkdir", "sleep", "cat"]

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
TABLES = {
    "tcp": HEAD
    + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 11\n"
    + "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 12\n"
    + "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000 1000 0 13\n"
    + "   3: 0F05A8C0:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000    0 0 14\n",
    "tcp6": HEAD
    + "   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000 1000 0 21\n"
    + "   1: 0000000000000000FFFF00000100007F:20FB 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000 1000 0 22\n"
    + "   2: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 06"
    " 00000000:00000000 00:00000000 00000000 1000 0 23\n",
    "udp": HEAD
    + "   0: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 31\n"
    + "   1: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000 0 0 32\n",
    "udp6": HEAD,
}
EXPECTED = {
    Listener("tcp", "127.0.0.1", 8080),
    Listener("tcp", "192.168.5.15", 22),
    Listener("tcp", "::1", 3000),
    Listener("tcp", "127.0.0.1", 8443),  # ::ffff:127.0.0.1
    Listener("udp", "0.0.0.0", 68),
}


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    for name, text in TABLES.items():
        (net / name).write_text(text)
    return tmp_path / "proc"


def sh_agent_report(kind: str, tmp: Path, proc: Path) -> str:
    env = {"LIMA_GA_ONCE": "1", "LIMA_GA_STATE": str(tmp / "state"),
           "LIMA_GA_PROC": str(proc), "LANG": "C"}
    if kind == "busybox":
        assert BUSYBOX
        bb = tmp / "bb"
        bb.mkdir()
        for applet in APPLETS:
            (bb / applet).symlink_to(BUSYBOX)
        argv = [BUSYBOX, "sh"]
        env["PATH"] = str(bb)
    else:
        assert DASH
        argv = [DASH]
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    proc_run = subprocess.run([*argv, str(UTIL / "lima-guestagent.sh")], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
    assert proc_run.returncode == 0, proc_run.stderr
    return proc_run.stdout


@pytest.mark.parametrize("kind", [
    pytest.param("busybox", marks=pytest.mark.skipif(not BUSYBOX, reason="no busybox")),
    pytest.param("dash", marks=pytest.mark.skipif(not DASH, reason="no dash")),
])
def test_sh_agent_reads_proc_net(kind: str, tmp_path: Path, fake_proc: Path) -> None:
    out = sh_agent_report(kind, tmp_path, fake_proc)
    assert out.count("\n") == 1
    assert parse_report(out) == EXPECTED
    assert '"agent":"sh"' in out and '"seq":1' in out


def python_agent() -> ModuleType:
    loader = SourceFileLoader("lima_guestagent", str(UTIL / "lima-guestagent"))
    spec = importlib.util.spec_from_loader("lima_guestagent", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_python_agent_reads_proc_net_alike(fake_proc: Path) -> None:
    agent = python_agent()
    found = {Listener(proto, ip, port) for proto in ("tcp", "udp")
             for ip, port in agent.proc_list(proto, str(fake_proc))}
    ports = agent.encode({(x.proto, x.ip, x.port) for x in found})
    line = json.dumps({"v": 1, "ports": ports})
    assert parse_report(line) == EXPECTED


def test_python_agent_sock_diag_sees_real_listeners() -> None:
    agent = python_agent()
    tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp6.bind(("::1", 0))
    tcp6.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = tcp6.getsockname()[1]
    try:
        lister = agent.Lister()
        ports = lister.ports()
        assert ("tcp", "::1", port) in ports
        assert ("udp", "127.0.0.1", udp.getsockname()[1]) in ports
        assert lister.diag == {"tcp": True, "udp": True}  # netlink, not the /proc fallback
    finally:
        tcp6.close()
        udp.close()
    assert ("tcp", "::1", port) not in agent.Lister().ports()  # closed: gone


def test_python_agent_polls_on_one_netlink_socket() -> None:
    """The agent keeps its sock_diag socket open across polls (a TCG guest pays for every
    socket it creates) and still sees each poll's listeners afresh."""
    agent = python_agent()
    lister = agent.Lister()
    lister.ports()
    nl = lister.nl
    assert nl is not None
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    try:
        assert ("tcp", "127.0.0.1", port) in lister.ports()
    finally:
        tcp.close()
    assert ("tcp", "127.0.0.1", port) not in lister.ports()
    assert lister.nl is nl and lister.diag == {"tcp": True, "udp": True}
