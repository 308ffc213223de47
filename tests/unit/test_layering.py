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


def test_only_runner_imports_subprocess() -> None:
    """One process chokepoint: lima/drivers/runner.py. Others that talk to a child they
    spawned take Popen, PIPE and TimeoutExpired from runner (imports inside functions
    count too: `imports_of` walks the whole tree)."""
    runner = LIMA / "drivers" / "runner.py"
    bad = [
        f"{path.relative_to(LIMA.parent)}"
        for path in LIMA.rglob("*.py")
        if path != runner and any(n == "subprocess" or n.startswith("subprocess.")
                                  for n in imports_of(path))
    ]
    assert bad == []
    assert "subprocess" in imports_of(runner)  # the rule is about a module that exists


def test_imports_of_sees_nested_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import subprocess\n    from subprocess import run\n")
    assert {"subprocess"} <= imports_of(sample)
