"""Lima's network config: `$LIMA_HOME/_config/networks.yaml`, as `limactl network` reads and
edits it.

Called by lima.commands.network. Lima's facts, on every host OS: the file is created with
the default networks (user-v2, shared, bridged, host) the first time it is read; a
`user-v2` network with a gateway is added in memory when the file has none; unknown keys
draw a deprecation warning; `create` and `delete` edit the file itself (Lima runs yq on it).
The edits here change only the lines of the network concerned, so the user's comments and
layout stay; when the file's shape does not allow that (flow style, no `networks:` block),
the whole file is written from its data instead. Every edit is checked by reading the new
text back before it replaces the file (atomically).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lima import paths
from lima.errors import LimaError

log = logging.getLogger(__name__)

FILENAME = "networks.yaml"
MODE_USER_V2, MODE_HOST, MODE_SHARED, MODE_BRIDGED = "user-v2", "host", "shared", "bridged"
MODES = (MODE_USER_V2, MODE_HOST, MODE_SHARED, MODE_BRIDGED)
NETWORK_KEYS = ("mode", "interface", "gateway", "dhcpEnd", "netmask")
_IP_KEYS = ("gateway", "dhcpEnd", "netmask")
# Where socket_vmnet may be, in Lima's order; the first is also the fallback.
SOCKET_VMNET_CANDIDATES = (
    "/opt/socket_vmnet/bin/socket_vmnet",
    "socket_vmnet",
    "/usr/local/opt/socket_vmnet/bin/socket_vmnet",
    "/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet",
)

_DEFAULT = """\
# Networks for `limactl create --network lima:NAME` (lima.yaml: networks[].lima).
# Edit with `limactl network create|delete`, or by hand.
#
# socket_vmnet (macOS) runs through sudo, so its executable, varRun and every
# parent directory must be writable by root only, with no symbolic links.
paths:
  socketVMNet: "{socket_vmnet}"
  varRun: /private/var/run/lima
  sudoers: /private/etc/sudoers.d/lima

# Members of this group may run socket_vmnet through sudo (macOS only).
group: admin

networks:
  user-v2:
    mode: user-v2
    gateway: 192.168.104.1
    netmask: 255.255.255.0
  shared:
    mode: shared
    gateway: 192.168.105.1
    dhcpEnd: 192.168.105.254
    netmask: 255.255.255.0
  bridged:
    mode: bridged
    interface: en0
    # no gateway: the outside network runs DHCP
  host:
    mode: host
    gateway: 192.168.106.1
    dhcpEnd: 192.168.106.254
    netmask: 255.255.255.0
"""


@dataclass(frozen=True)
class Network:
    """One network as Lima's networks.Network, IPs normalised as Go prints them."""

    mode: str = ""
    interface: str = ""
    gateway: str = ""
    dhcp_end: str = ""
    netmask: str = ""

    def json_line(self, name: str) -> str:
        out: dict[str, str] = {"name": name, "mode": self.mode}
        for key, value in (("interface", self.interface), ("gateway", self.gateway),
                           ("dhcpEnd", self.dhcp_end), ("netmask", self.netmask)):
            if value:
                out[key] = value
        return json.dumps(out, separators=(",", ":"))

    def gateway_cidr(self) -> str:
        """The table's GATEWAY: `IP/PREFIX` (Go's net.IPNet), `-` without a gateway."""
        if not self.gateway:
            return "-"
        if not self.netmask:
            return "<nil>"
        mask = ipaddress.ip_address(self.netmask)
        bits = f"{int(mask):0{mask.max_prefixlen}b}"
        ones = len(bits) - len(bits.lstrip("1"))
        if "1" in bits[ones:]:
            return f"{self.gateway}/{mask.packed.hex()}"
        return f"{self.gateway}/{ones}"


@dataclass
class Config:
    path: Path
    networks: dict[str, Network] = field(default_factory=dict)


def config_file() -> Path:
    return paths.config_dir() / FILENAME


def default_config_text() -> str:
    found = SOCKET_VMNET_CANDIDATES[0]
    for candidate in SOCKET_VMNET_CANDIDATES:
        located = shutil.which(candidate)
        if located:
            found = str(Path(located).resolve())
            break
    return _DEFAULT.format(socket_vmnet=found)


def _ip(value: Any, where: str, path: Path) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise LimaError(f"cannot parse `{path}`: {where}: invalid IP address: {value}") from None


def load_config() -> Config:
    """networks.yaml (made with the defaults when missing), filled as Lima fills it."""
    path = config_file()
    if not path.exists():
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        from lima.fsutil import atomic_write

        atomic_write(path, default_config_text(), mode=0o644)
    data = _parse(path.read_text(encoding="utf-8"), path)
    config = Config(path)
    unknown = [k for k in data if k not in ("paths", "group", "networks")]
    raw = data.get("networks") or {}
    if not isinstance(raw, dict):
        raise LimaError(f"cannot parse `{path}`: networks: must be a mapping")
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise LimaError(f"cannot parse `{path}`: networks.{name}: must be a mapping")
        unknown += [f"networks.{name}.{k}" for k in entry if k not in NETWORK_KEYS]
        ips = {k: _ip(entry[k], f"networks.{name}.{k}", path)
               for k in _IP_KEYS if entry.get(k) not in (None, "")}
        config.networks[str(name)] = Network(
            mode=str(entry.get("mode") or ""), interface=str(entry.get("interface") or ""),
            gateway=ips.get("gateway", ""), dhcp_end=ips.get("dhcpEnd", ""),
            netmask=ips.get("netmask", ""))
    if unknown:
        log.warning("Non-strict YAML is deprecated and will be unsupported in a future "
                    "version of Lima: %s (unknown: %s)", path, ", ".join(map(str, unknown)))
    if not any(n.mode == MODE_USER_V2 and n.gateway for n in config.networks.values()):
        defaults = yaml.safe_load(_DEFAULT.format(socket_vmnet=""))["networks"][MODE_USER_V2]
        config.networks[MODE_USER_V2] = Network(
            mode=MODE_USER_V2, gateway=defaults["gateway"], netmask=defaults["netmask"])
    return config


def _parse(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LimaError(f"cannot parse `{path}`: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LimaError(f"cannot parse `{path}`: not a mapping")
    return data


# -- edits ----------------------------------------------------------------------------------


def _scalar(value: str) -> str:
    """`value` as a YAML scalar that reads back as this very string."""
    if value and re.fullmatch(r"[A-Za-z0-9_./:-]+", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def _block(lines: list[str]) -> tuple[int, int, str] | None:
    """(first line after `networks:`, end of its block, child indent) or None."""
    start = next((i for i, ln in enumerate(lines)
                  if re.fullmatch(r"networks:\s*(#.*)?", ln.rstrip("\n"))), None)
    if start is None:
        return None
    end = len(lines)
    indent = ""
    for i in range(start + 1, len(lines)):
        text = lines[i].rstrip("\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if not text[0].isspace():
            end = i
            break
        if not indent:
            indent = text[: len(text) - len(text.lstrip())]
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines before the next key stay outside
    return start + 1, end, indent or "  "


def _entry_span(lines: list[str], begin: int, end: int, indent: str,
                name: str) -> tuple[int, int] | None:
    for i in range(begin, end):
        text = lines[i].rstrip("\n")
        if not text.startswith(indent) or text[len(indent):len(indent) + 1].isspace():
            continue
        key = text[len(indent):].split(":", 1)[0].strip()
        if key and yaml.safe_load(key) == name:
            j = i + 1
            while j < end:
                nxt = lines[j].rstrip("\n")
                deeper = nxt.startswith(indent) and nxt[len(indent):len(indent) + 1].isspace()
                if nxt.strip() and not deeper:
                    break
                j += 1
            return i, j
    return None


def _write(path: Path, text: str, expected: dict[str, Any]) -> None:
    """Replace the file with `text` if it reads back as `expected`, else with `expected`
    dumped as plain YAML."""
    from lima.fsutil import atomic_write

    try:
        ok = yaml.safe_load(text) == expected
    except yaml.YAMLError:
        ok = False
    if not ok:
        text = yaml.safe_dump(expected, sort_keys=False, default_flow_style=False)
    atomic_write(path, text, mode=0o644)


def add_network(name: str, entry: dict[str, str]) -> None:
    """`.networks.NAME = ENTRY` on the file (a new key goes last, as yq puts it)."""
    path = config_file()
    text = path.read_text(encoding="utf-8")
    data = _parse(text, path)
    nets = data.get("networks")
    expected = dict(data)
    expected["networks"] = {**(nets if isinstance(nets, dict) else {}), name: dict(entry)}
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    block = _block(lines) if isinstance(nets, dict) and name not in nets else None
    if block is not None:
        _, end, indent = block
        new = [f"{indent}{_scalar(name)}:\n"]
        new += [f"{indent}{indent}{k}: {_scalar(v)}\n" for k, v in entry.items()]
        lines[end:end] = new
    _write(path, "".join(lines), expected)


def delete_networks(names: list[str]) -> None:
    """`del(.networks.NAME)` for each name (a missing one is no error, as in Lima)."""
    path = config_file()
    text = path.read_text(encoding="utf-8")
    data = _parse(text, path)
    nets = data.get("networks")
    if not isinstance(nets, dict):
        return
    expected = dict(data)
    expected["networks"] = {k: v for k, v in nets.items() if k not in names}
    lines = text.splitlines(keepends=True)
    for name in names:
        block = _block(lines)
        span = _entry_span(lines, block[0], block[1], block[2], name) if block else None
        if span is not None:
            del lines[span[0]:span[1]]
    block = _block(lines)
    if not expected["networks"] and block is not None:
        lines[block[0] - 1] = "networks: {}\n"  # yq's empty mapping
    _write(path, "".join(lines), expected)
