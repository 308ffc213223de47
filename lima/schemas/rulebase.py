"""Shared ground for the semantic rules (rules.py, rules_net.py): the rule context and the
small checks several rules use (files with digests, IP addresses, sizes, enums, ports).

Lima's value sets live here too, so the schema description, the rules and their tests
speak of the same names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lima.errors import Problem
from lima.schemas.arch import ARCHES
from lima.schemas.lines import LineMap, Path, format_path, line_of
from lima.schemas.sizes import parse_size

OSES = ("Linux", "Darwin", "FreeBSD")
# Lima v2 drivers, experimental ones included (ac, dc, hcs, ext templates ship with Lima).
VM_TYPES = ("qemu", "vz", "wsl2", "krunkit", "ac", "dc", "hcs", "ext")
MOUNT_TYPES = ("reverse-sshfs", "9p", "virtiofs", "wsl2")
PROVISION_MODES = ("system", "user", "boot", "dependency", "data", "yq", "ansible")
PROTOS = ("tcp", "udp", "any")
SYSTEM_DIRS = ("/", "/bin", "/dev", "/etc", "/home", "/opt", "/sbin", "/tmp", "/usr", "/var")
DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
SLIRP_NIC = "eth0"

_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass
class Ctx:
    """What a rule sees: the document, where its fields are, and where problems go."""

    data: dict[str, Any]
    lines: LineMap
    source: str
    filled: bool = False
    problems: list[Problem] = field(default_factory=list)

    def error(self, path: Path, message: str) -> None:
        self._add(path, message, warning=False)

    def warn(self, path: Path, message: str) -> None:
        self._add(path, message, warning=True)

    def _add(self, path: Path, message: str, *, warning: bool) -> None:
        file, line = line_of(self.lines, path, self.source)
        self.problems.append(Problem(file, line, format_path(path), message, warning))

    def get(self, *path: str | int) -> Any:
        """The value at `path`, or None when any step is missing or of the wrong kind."""
        value: Any = self.data
        for step in path:
            if isinstance(step, int):
                if not isinstance(value, list) or step >= len(value):
                    return None
            elif not isinstance(value, dict):
                return None
            value = value.get(step) if isinstance(value, dict) else value[step]
        return value

    def entries(self, key: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, entry) of each mapping in the top-level list `key`."""
        items = self.data.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    yield i, item


Rule = Callable[[Ctx], None]


# -- helpers ------------------------------------------------------------------------------
def str_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def int_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def templated(value: str) -> bool:
    return "{{" in value


def one_of(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def semver(text: str) -> tuple[int, int, int] | None:
    m = _SEMVER.match(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def digest_problem(digest: str) -> str | None:
    """Why `digest` is not a valid `algo:hex` digest, or None."""
    m = _DIGEST.match(digest)
    if m is None:
        return f'invalid digest "{digest}": expected "algorithm:hex", e.g. "sha256:0123..."'
    algo, hexpart = m.groups()
    size = DIGEST_HEX.get(algo)
    if size is None:
        return f'unsupported digest algorithm "{algo}" (expected {one_of(tuple(DIGEST_HEX))})'
    if len(hexpart) != size or not re.fullmatch(r"[a-f0-9]+", hexpart):
        return f"invalid {algo} digest: expected {size} lowercase hex digits"
    return None


def port_problem(port: int) -> str | None:
    """Lima's port rule for forwards and ssh.localPort."""
    if port < 0:
        return "must be > 0"
    if port == 0:
        return "must be set"
    if port == 22:
        return "must not be 22"
    if port > 65535:
        return "must be < 65536"
    return None


def check_file(ctx: Ctx, path: Path, entry: dict[str, Any], *, arch_required: bool) -> None:
    location = entry.get("location")
    if isinstance(location, str) and not location.strip():
        ctx.error((*path, "location"), "must not be empty")
    arch = str_of(entry.get("arch"))
    if arch is not None and arch not in ARCHES:
        ctx.error((*path, "arch"), f"must be one of {one_of(ARCHES)}; got \"{arch}\"")
    elif arch is None and arch_required:
        ctx.error((*path, "arch"), "must be set")
    digest = str_of(entry.get("digest"))
    if digest:
        why = digest_problem(digest)
        if why:
            ctx.error((*path, "digest"), why)


def check_ip(ctx: Ctx, path: Path, value: Any) -> None:
    if isinstance(value, str) and not templated(value):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            ctx.error(path, f'"{value}" is not an IP address')


def check_size(ctx: Ctx, path: Path, value: Any) -> None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            parse_size(value)
        except ValueError as e:
            ctx.error(path, f"has an invalid value: {e}")


def check_enum(ctx: Ctx, path: Path, value: Any, allowed: tuple[str, ...]) -> None:
    if isinstance(value, str) and value not in allowed:
        ctx.error(path, f'must be one of {one_of(allowed)}; got "{value}"')
