"""The host programs table (lima.hostprograms) against the code, the tests and bootstrap.

Static, so a machine that has every program installed by hand cannot hide a gap: the
program names come from the source (string literals used as argv[0] in calls that start
processes, and the constants they come from) and the packages from scripts/bootstrap's
APT_PACKAGES, never from `which`. The run-time half is the check in lima.drivers.runner
(see tests/conftest.py).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lima import hostprograms
from lima.drivers import mounts, qemu, runner
from lima.drivers.images.build_debian import DebianRecipe
from lima.drivers.images.build_tiny import TinyRecipe
from lima.hostprograms import PROGRAMS

REPO = Path(__file__).resolve().parents[2]
LIMA = REPO / "lima"

QEMU_SYSTEMS = {f"qemu-system-{suffix}" for suffix in qemu.QEMU_ARCH.values()}

# Call sites in lima/ whose argv[0] no literal names, and the programs they can start.
# A new such site fails test_every_lima_process_site_is_known until it is added here.
DYNAMIC_SITES: dict[tuple[str, str], set[str]] = {
    # qemu_binary(arch): qemu-system-<QEMU_ARCH[arch]> or $QEMU_SYSTEM_*.
    ("lima/drivers/hostagent/daemon.py", "HostAgent._start_qemu"): QEMU_SYSTEMS,
    ("lima/drivers/accel.py", "probe_kvm"): QEMU_SYSTEMS,
    # sftp_server(): the first of SFTP_SERVERS that exists.
    ("lima/drivers/mounts.py", "mount_one"): {os.path.basename(p) for p in mounts.SFTP_SERVERS},
    ("lima/drivers/qemu.py", "qemu_binary"): QEMU_SYSTEMS,
    # mountType virtiofs: find_virtiofsd()'s virtiofsd, wrapped in `unshare` when not root.
    ("lima/drivers/virtiofs.py", "flavor_of"): {"virtiofsd"},
    ("lima/drivers/hostagent/virtiofsd.py", "_spawn"): {"virtiofsd", "unshare"},
    # ssh_argv(..., ssh=$SSH or "ssh"), run as a child.
    ("lima/commands/shell.py", "run_ssh_child"): {"ssh"},
    # --reconnect: `$SSH -O exit` on the instance's ControlMaster.
    ("lima/commands/shell.py", "exit_master"): {"ssh"},
    # limactl copy: the backend choose_backend picked, and ssh asking a guest for rsync.
    ("lima/commands/copy.py", "copy"): {"scp", "rsync"},
    ("lima/commands/copy.py", "_guest_has_rsync"): {"ssh"},
    # limactl tunnel: `ssh ... -D 127.0.0.1:PORT` (tunnel_argv).
    ("lima/commands/tunnel.py", "tunnel"): {"ssh"},
    # reverse port forwards: `ssh -F ssh.config ... -R GUEST:HOST lima-NAME` (reverse_argv).
    ("lima/drivers/hostagent/reversefwd.py", "ReverseForward._run"): {"ssh"},
    # check_tools: `shutil.which` of each recipe's tools (added by lima_programs).
    ("lima/drivers/images/build.py", "check_tools"): set(),
    # limactl plugins: the user's own `limactl-NAME` executables (spawn(user_program=True)).
    ("lima/plugins.py", "run"): set(),
    # Finds limactl itself on PATH (argv[0]) to search its directory for plugins.
    ("lima/plugins.py", "self_dirs"): set(),
    # Finds limactl itself, to write its path in the autostart unit (starts nothing).
    ("lima/drivers/autostart.py", "limactl_binary"): set(),
    # Looks socket_vmnet up to write its path in networks.yaml (starts nothing).
    ("lima/drivers/networks.py", "default_config_text"): set(),
    # limactl edit: $VISUAL, $EDITOR, else the first of editor, vim, vi, emacs (the tests
    # set EDITOR=ed).
    ("lima/commands/edit.py", "open_editor"): {"editor", "vim", "vi", "emacs", "ed"},
    ("lima/commands/edit.py", "detect_editor"): {"editor", "vim", "vi", "emacs", "ed"},
    # The run-time check looks up whatever it is given.
    ("lima/hostprograms.py", "check_program"): set(),
    # Wrappers that pass their argv on: their callers are scanned (WRAPPERS below).
    ("lima/drivers/images/build.py", "BuildContext.run"): set(),
}
# Calls through those wrappers: `ctx.run([...])`.
WRAPPERS = {("ctx", "run")}

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                    "getstatusoutput"}
OS_PROCESS_CALLS = re.compile(r"system|popen|spawn.*|exec.*|posix_spawn.*|fork.*")


@dataclass(frozen=True)
class Site:
    """One call that starts a process (or looks a program up) and what argv[0] may be."""

    path: str
    function: str
    line: int
    programs: frozenset[str] | None  # None: argv[0] is not a literal this scan can follow


def _dotted(node: ast.expr) -> tuple[str, str]:
    """`a.b(...)` -> ("a", "b"); `f(...)` -> ("", "f"); anything else -> ("", "")."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    if isinstance(node, ast.Name):
        return "", node.id
    return "", ""


class _Scanner(ast.NodeVisitor):
    """Collects process-starting call sites of one module, resolving argv[0] by its
    literals: a list's first element, a name's assignments (in the function, else at
    module level), `Path / "bin/x"`, `shutil.which("x")`, `sys.executable`."""

    def __init__(self, path: str, tree: ast.Module, *, tests: bool) -> None:
        self.path = path
        self.tests = tests
        self.module_assigns = self._assigns(tree, top_level=True)
        self.stack: list[str] = []
        self.scopes: list[dict[str, list[ast.expr]]] = []
        self.sites: list[Site] = []
        self.visit(tree)

    @staticmethod
    def _assigns(node: ast.AST, *, top_level: bool = False) -> dict[str, list[ast.expr]]:
        found: dict[str, list[ast.expr]] = {}
        body = node.body if top_level and isinstance(node, ast.Module) else None
        nodes = body if body is not None else list(ast.walk(node))
        for n in nodes:
            if isinstance(n, ast.Assign):
                targets, value = n.targets, n.value
            elif isinstance(n, ast.AnnAssign) and n.value is not None:
                targets, value = [n.target], n.value
            else:
                continue
            for t in targets:
                if isinstance(t, ast.Name):
                    found.setdefault(t.id, []).append(value)
        return found

    def _lookup(self, name: str) -> list[ast.expr] | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return self.module_assigns.get(name)

    def word(self, node: ast.expr, depth: int = 0) -> set[str] | None:
        """The program names an argv[0] expression can be."""
        if depth > 8:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {hostprograms.program_name(node.value)}
        if isinstance(node, ast.Attribute) and _dotted(node) == ("sys", "executable"):
            return {hostprograms.program_name(sys.executable)}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.word(node.right, depth + 1)  # a Path: its last part names it
        if isinstance(node, ast.Call):
            if _dotted(node.func) == ("shutil", "which") and node.args:
                return self.word(node.args[0], depth + 1)
            if _dotted(node.func) in (("", "str"), ("", "Path")) and len(node.args) == 1:
                return self.word(node.args[0], depth + 1)
            return None
        if isinstance(node, ast.Name):
            values = self._lookup(node.id)
            if not values:
                return None
            found: set[str] = set()
            for v in values:
                names = self.word(v, depth + 1)
                if names is None:
                    return None
                found |= names
            return found
        return None

    def argv(self, node: ast.expr, depth: int = 0) -> set[str] | None:
        """The program names an argv expression can start."""
        if depth > 8:
            return None
        if isinstance(node, ast.List | ast.Tuple):
            if not node.elts or isinstance(node.elts[0], ast.Starred):
                return None
            return self.word(node.elts[0], depth + 1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.argv(node.left, depth + 1)  # argv + [...]: argv[0] is the left's
        if isinstance(node, ast.Name):
            values = self._lookup(node.id)
            if not values:
                return None
            found: set[str] = set()
            for v in values:
                names = self.argv(v, depth + 1)
                if names is None:
                    return None
                found |= names
            return found
        return None

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.stack.append(node.name)
        is_function = not isinstance(node, ast.ClassDef)
        if is_function:
            self.scopes.append(self._assigns(node))
        self.generic_visit(node)
        if is_function:
            self.scopes.pop()
        self.stack.pop()

    visit_FunctionDef = _scoped
    visit_AsyncFunctionDef = _scoped
    visit_ClassDef = _scoped

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        owner, name = _dotted(node.func)
        argv: ast.expr | None = None
        if (owner == "runner" and name in ("run", "spawn")) or (owner, name) in WRAPPERS:
            argv = node.args[0] if node.args else None
        elif owner == "os" and name.startswith("exec"):
            argv = ast.List(elts=[node.args[0]]) if node.args else None
        elif owner == "shutil" and name == "which":
            argv = ast.List(elts=[node])
        elif self.tests and owner == "subprocess" and name in SUBPROCESS_CALLS:
            argv = node.args[0] if node.args else None
        else:
            return
        programs = self.argv(argv) if argv is not None else None
        self.sites.append(Site(self.path, ".".join(self.stack), node.lineno,
                               None if programs is None else frozenset(programs)))


def _sources(*dirs: str) -> Iterator[tuple[str, ast.Module]]:
    for d in dirs:
        for path in sorted((REPO / d).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            yield rel, ast.parse(path.read_text(), rel)


def scan(*dirs: str, tests: bool) -> list[Site]:
    return [s for rel, tree in _sources(*dirs) for s in _Scanner(rel, tree, tests=tests).sites]


def lima_programs() -> tuple[set[str], list[Site]]:
    """Every program lima/ can start, and the sites this scan cannot follow."""
    found: set[str] = set()
    unknown: list[Site] = []
    for site in scan("lima", tests=False):
        key = (site.path, site.function)
        if key in DYNAMIC_SITES:
            found |= DYNAMIC_SITES[key]
        elif site.programs is None:
            unknown.append(site)
        else:
            found |= site.programs
    for recipe in (DebianRecipe(), TinyRecipe()):
        found |= {tool for tool, _ in recipe.tools}
    return found, unknown


# -- lima/ ---------------------------------------------------------------------------------


SAMPLE = """
import os, shutil, sys
from lima.drivers import runner
TOOL = "rsync"

def literal():
    runner.run(["cp", "-a", "x", "y"])
    runner.spawn([TOOL, "-a"])
    os.execvp("ssh", ["ssh", "h"])

def assigned(tree):
    argv = ["mkfs.ext4", "-q"]
    if tree:
        argv = [tree / "bin/busybox", "--list"]
    runner.run(argv + ["more"])
    runner.spawn([sys.executable, "-m", "lima.cli"])
    shutil.which("zstd")

def passed_on(argv):
    runner.run(argv)
"""


def test_scanner_follows_literals_and_flags_the_rest() -> None:
    sites = _Scanner("sample.py", ast.parse(SAMPLE), tests=False).sites
    assert [(s.function, s.programs and sorted(s.programs)) for s in sites] == [
        ("literal", ["cp"]),
        ("literal", ["rsync"]),
        ("literal", ["ssh"]),
        ("assigned", ["busybox", "mkfs.ext4"]),
        ("assigned", ["python3"]),
        ("assigned", ["zstd"]),
        ("passed_on", None),
    ]



def test_every_lima_process_site_is_known() -> None:
    """A call whose argv[0] is not a literal needs an entry in DYNAMIC_SITES."""
    _, unknown = lima_programs()
    assert [f"{s.path}:{s.line} in {s.function}" for s in unknown] == []


def test_dynamic_sites_still_exist() -> None:
    sites = {(s.path, s.function) for s in scan("lima", tests=False)}
    assert set(DYNAMIC_SITES) - sites == set()


def test_every_program_lima_starts_is_in_the_table() -> None:
    found, _ = lima_programs()
    assert sorted(found - set(PROGRAMS)) == []
    not_marked = sorted(n for n in found if not PROGRAMS[n].lima)
    assert not_marked == [], "lima starts these: set lima=True"


def test_the_table_names_nothing_lima_does_not_start() -> None:
    found, _ = lima_programs()
    stale = sorted(p.name for p in PROGRAMS.values() if p.lima and p.name not in found)
    assert stale == []


def test_recipe_tools_agree_with_the_table() -> None:
    """The build recipes name the package of each tool in their error message."""
    for recipe in (DebianRecipe(), TinyRecipe()):
        for tool, package in recipe.tools:
            assert PROGRAMS[tool].package == package, (recipe.name, tool)


def test_processes_start_only_through_the_runner_and_the_shell_exec() -> None:
    """Anything else (subprocess, os.system, os.spawn*) would escape both checks."""
    bad = []
    for rel, tree in _sources("lima"):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            owner, name = _dotted(node.func)
            starts = (owner == "subprocess" and name in SUBPROCESS_CALLS) or (
                owner in ("os", "pty", "asyncio")
                and (OS_PROCESS_CALLS.fullmatch(name) or name.startswith("create_subprocess")))
            allowed = {("lima/drivers/runner.py", "subprocess"), ("lima/commands/shell.py", "os")}
            if starts and (rel, owner) not in allowed:
                bad.append(f"{rel}:{node.lineno} {owner}.{name}")
            if starts and (rel, owner) == ("lima/commands/shell.py", "os") and name != "execvp":
                bad.append(f"{rel}:{node.lineno} {owner}.{name}")
    assert bad == []


# -- tests/ and benchmarks/ ----------------------------------------------------------------


def test_programs_the_tests_start_are_in_the_table() -> None:
    found: set[str] = set()
    for site in scan("tests", "benchmarks", tests=True):
        found |= site.programs or set()
    assert sorted(found - set(PROGRAMS)) == []
    assert sorted(n for n in found if not PROGRAMS[n].tests) == [], "set tests=True"
    stale = sorted(p.name for p in PROGRAMS.values() if p.tests and p.name not in found)
    assert stale == []


# -- scripts/bootstrap ---------------------------------------------------------------------


def apt_packages(text: str) -> list[str]:
    """The words of bootstrap's `APT_PACKAGES=( ... )` array, comments dropped."""
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert m, "scripts/bootstrap has no APT_PACKAGES=( ... ) array"
    return [w for line in m.group(1).splitlines() for w in line.split("#", 1)[0].split()]


def test_apt_packages_parser() -> None:
    text = "x\nAPT_PACKAGES=(\n  a b   # c d\n  # e\n  f\n)\ny=(g)\n"
    assert apt_packages(text) == ["a", "b", "f"]


def test_bootstrap_installs_every_package_of_the_table() -> None:
    installed = set(apt_packages((REPO / "scripts/bootstrap").read_text()))
    missing = {p.name: p.package for p in PROGRAMS.values()
               if p.bootstrap and p.package not in installed}
    assert missing == {}


def test_bootstrap_installs_nothing_unexplained() -> None:
    listed = apt_packages((REPO / "scripts/bootstrap").read_text())
    assert sorted(set(listed) - {p.package for p in PROGRAMS.values()}) == []
    assert len(listed) == len(set(listed))


def test_readme_shows_the_table() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Host programs\n"):]
    table = re.search(r"^\|.*?\n(?!\|)", section, re.S | re.M)
    assert table and table.group(0) == hostprograms.markdown_table()


# -- the run-time check --------------------------------------------------------------------


@pytest.fixture
def checking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The check on, with its own log (a miss here must not fail the whole session)."""
    log = tmp_path / "programs.log"
    monkeypatch.setenv(hostprograms.CHECK_ENV, "1")
    monkeypatch.setenv(hostprograms.LOG_ENV, str(log))
    return log


def _unlisted_program(tmp_path: Path) -> str:
    exe = tmp_path / "not-in-the-table"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return str(exe)


def test_check_refuses_and_records_an_unlisted_program(checking: Path, tmp_path: Path) -> None:
    exe = _unlisted_program(tmp_path)
    with pytest.raises(runner.CommandError) as err:
        runner.run([exe])
    assert err.value.returncode == 127 and "lima.hostprograms" in str(err.value)
    with pytest.raises(runner.CommandError):
        runner.spawn([exe, "x"])
    lines = checking.read_text().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["not-in-the-table", exe]] * 2


def test_check_passes_listed_and_absent_programs(checking: Path, tmp_path: Path) -> None:
    hostprograms.check_program("/usr/lib/openssh/sftp-server")
    hostprograms.check_program("qemu-img")
    hostprograms.check_program(sys.executable)
    # Not on this machine: it fails as "not found" everywhere, nothing to hide.
    hostprograms.check_program(str(tmp_path / "no-such-program"))
    hostprograms.check_program("no-such-program-limapy")
    assert not checking.exists()


def test_check_is_off_without_the_variable(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.delenv(hostprograms.CHECK_ENV, raising=False)
    hostprograms.check_program(_unlisted_program(tmp_path))


def test_program_names() -> None:
    assert hostprograms.program_name("/usr/lib/openssh/sftp-server") == "sftp-server"
    assert hostprograms.program_name(sys.executable) == "python3"
    assert hostprograms.program_name("/x/python3.11") == "python3"
    assert hostprograms.program_name("qemu-system-x86_64") == "qemu-system-x86_64"
