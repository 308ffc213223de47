"""The layering of DESIGN.md section 2: cli > controller > drivers > states > schemas, and
the pure layers (schemas, states) import nothing that starts processes or opens sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIMA = Path(__file__).resolve().parents[2] / "lima"

# package -> lima packages it must not import
FORBIDDEN_LAYERS = {
    "schemas": ("lima.states", "lima.drivers", "lima.controller", "lima.commands", "lima.cli"),
    "states": ("lima.drivers", "lima.controller", "lima.commands", "lima.cli"),
    "drivers": ("lima.controller", "lima.commands", "lima.cli"),
    "controller": ("lima.commands", "lima.cli"),
}
IMPURE = ("subprocess", "socket", "paramiko", "pycdlib", "watchdog", "http", "urllib",
          "lima.drivers.runner")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((LIMA / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN_LAYERS))
def test_no_upward_imports(package: str) -> None:
    bad = [
        f"{path.relative_to(LIMA.parent)} imports {name}"
        for path in _modules(package)
        for name in imports_of(path)
        if name.startswith(FORBIDDEN_LAYERS[package])
    ]
    assert bad == []


@pytest.mark.parametrize("package", ["schemas", "states"])
def test_pure_layers_do_no_io_imports(package: str) -> None:
    bad = [
        f"{path.relative_to(LIMA.parent)} imports {name}"
        for path in _modules(package)
        for name in imports_of(path)
        if name == "os.system" or any(name == m or name.startswith(m + ".") for m in IMPURE)
    ]
    assert bad == []


def test_only_drivers_start_processes() -> None:
    bad = [
        f"{path.relative_to(LIMA.parent)}"
        for path in LIMA.rglob("*.py")
        if "subprocess" in imports_of(path)
        and path.parent.name not in ("drivers", "images", "hostagent")
    ]
    assert bad == []
