"""Facts written once (REVIEW.md C3): each guest address, marker path, arch table, size
parser, MAC derivation, ISO sniff, socket-path limit, image-suffix pattern, host name rule
and atomic file replacement lives in one module; this test fails when a second copy of one
of them appears anywhere in lima/.

It reads the code, not the comments: string constants that are statements (docstrings)
do not count, so a docstring may still say "/run/lima-boot-done".
"""

from __future__ import annotations

import ast
import functools
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lima import paths
from lima.schemas import arch

LIMA = Path(__file__).resolve().parents[2] / "lima"


@functools.cache
def _modules() -> tuple[tuple[str, ast.Module], ...]:
    return tuple(
        (rel, ast.parse(path.read_text(), rel))
        for path in sorted(LIMA.rglob("*.py"))
        for rel in [path.relative_to(LIMA.parent).as_posix()]
    )


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of string constants that stand alone as statements (docstrings)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)
                and id(node) not in docs):
            value = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            yield node.lineno, value


def _where(check: Callable[[ast.Module], Iterator[int]], allowed: set[str]) -> list[str]:
    return [f"{rel}:{line}" for rel, tree in _modules() if rel not in allowed
            for line in check(tree)]


def _literal(*needles: str) -> Callable[[ast.Module], Iterator[int]]:
    def check(tree: ast.Module) -> Iterator[int]:
        for line, value in _strings(tree):
            if any(n in value for n in needles):
                yield line
    return check


def _defines(name: str) -> Callable[[ast.Module], Iterator[int]]:
    def check(tree: ast.Module) -> Iterator[int]:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                yield node.lineno
    return check


def _calls(dotted: str) -> Callable[[ast.Module], Iterator[int]]:
    obj, attr = dotted.split(".")

    def check(tree: ast.Module) -> Iterator[int]:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == attr and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == obj):
                yield node.lineno
    return check


def _ints(*values: int) -> Callable[[ast.Module], Iterator[int]]:
    def check(tree: ast.Module) -> Iterator[int]:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and type(node.value) is int
                    and node.value in values):
                yield node.lineno
    return check


def _arch_maps(tree: ast.Module) -> Iterator[int]:
    """A dict that maps another arch spelling, or a collection listing three arch names."""
    names = {"x86_64", "aarch64", "armv7l", "ppc64le", "riscv64", "s390x"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if keys & {"amd64", "arm64", "armhf", "ppc64el"}:
                yield node.lineno
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if len(items & names) >= 3:
                yield node.lineno


def _hostname_rule(tree: ast.Module) -> Iterator[int]:
    """`"lima-" + name` or f"lima-{name}": the guest host name built by hand."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if (isinstance(first, ast.Constant) and first.value == "lima-"
                    and len(node.values) > 1):
                yield node.lineno
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
                and isinstance(node.left, ast.Constant) and node.left.value == "lima-"):
            yield node.lineno


# fact -> (where a second copy would show, the one module allowed to hold it)
FACTS: dict[str, tuple[Callable[[ast.Module], Iterator[int]], set[str]]] = {
    "slirp addresses": (_literal("192.168.5."), {"lima/drivers/guest.py"}),
    "guest-agent port": (_literal("io.lima-vm.guest_agent"), {"lima/drivers/guest.py"}),
    # phases.py's Transition "why" texts are prose for docs/lifecycle.md.
    "IID marker paths": (_literal("/run/lima-"), {"lima/drivers/guest.py",
                                                  "lima/states/phases.py"}),
    "arch table": (_arch_maps, {"lima/schemas/arch.py"}),
    "size parsing": (_defines("parse_size"), {"lima/schemas/sizes.py"}),
    "MAC derivation": (_defines("mac_address"), {"lima/schemas/macaddr.py"}),
    "ISO9660 sniff": (_literal("CD001"), {"lima/drivers/images/imagecheck.py"}),
    "socket-path limit": (_ints(104, 108), {"lima/paths.py"}),
    "image suffixes": (_literal("qcow2|raw"), {"lima/schemas/templates.py"}),
    # qemu's `-name lima-NAME` is Lima's process name (the raw name), not the host name.
    "guest host name": (_hostname_rule, {"lima/names.py", "lima/drivers/qemu.py"}),
    # Files written from memory are replaced by lima.fsutil.atomic_write; these rename
    # files another program wrote (qemu-img, a streamed download) or a whole directory.
    "atomic replace": (_calls("os.replace"), {
        "lima/fsutil.py",
        "lima/drivers/images/disks.py",  # qemu-img made the disk under a temp name
        "lima/drivers/images/repair.py",  # qemu-img rebased a copy of the diffdisk
        "lima/drivers/images/download.py",  # the streamed data.tmp into its cache entry
        "lima/drivers/suspend.py",  # qemu migrated the guest's state into the temp
        "lima/drivers/boottemplate.py",  # the same, for a boot template in the cache
    }),
}


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_fact_is_written_once(fact: str) -> None:
    check, allowed = FACTS[fact]
    assert _where(check, allowed) == [], f"a second copy of the {fact}: use the one in {allowed}"
    # The one place still holds it (else the check above would pass vacuously); the arch
    # table is built from rows, so it is checked by what it answers instead.
    if fact == "arch table":
        assert arch.WORDS["amd64"] == "x86_64" and arch.QEMU_ARCH["armv7l"] == "arm"
        return
    held = [owner for owner in sorted(allowed)
            if list(check(ast.parse((LIMA.parent / owner).read_text())))]
    assert held, f"the {fact} is in none of {allowed}"


def test_the_checks_see_a_second_copy() -> None:
    """Each check finds the kind of copy it is meant to catch."""
    samples = {
        "slirp addresses": 'GW = "192.168.5.2"',
        "IID marker paths": 'M = "/run/lima-boot-done"',
        "arch table": '_A = {"amd64": "x86_64"}',
        "guest host name": 'h = f"lima-{name}"',
        "atomic replace": "os.replace(tmp, path)",
        "socket-path limit": "UNIX_PATH_MAX = 104",
        "image suffixes": r'R = re.compile(r"\.(img|qcow2|raw|iso)$")',
    }
    for fact, code in samples.items():
        assert list(FACTS[fact][0](ast.parse(code))), fact
    assert not list(FACTS["IID marker paths"][0](ast.parse('"""/run/lima-boot-done"""')))


def test_unix_path_max_is_sun_path() -> None:
    """UNIX_PATH_MAX is the real size of sun_path, NUL included: a socket path one byte
    shorter binds, a path of UNIX_PATH_MAX bytes does not (the checks in lima.names,
    lima.drivers.qemu and sshconfig refuse `len >= UNIX_PATH_MAX` for that reason)."""
    base = Path("/tmp") / f"sp{os.getpid()}"
    base.mkdir(exist_ok=True)
    try:
        room = paths.UNIX_PATH_MAX - len(str(base)) - 1  # the "/" after base
        for size, fits in ((room - 1, True), (room, False)):
            path = base / ("s" * size)
            assert len(os.fsencode(path)) == paths.UNIX_PATH_MAX - (1 if fits else 0)
            with socket.socket(socket.AF_UNIX) as sock:
                if fits:
                    sock.bind(str(path))
                    path.unlink()
                else:
                    with pytest.raises(OSError, match="too long"):
                        sock.bind(str(path))
    finally:
        for p in base.iterdir():
            p.unlink()
        base.rmdir()
