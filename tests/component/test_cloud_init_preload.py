"""build:debian-12's cloud-init preload server and stage client (lima/assets/debian), run on
the host against a stand-in `cloudinit` package: what a stage sees (argv, environment,
working directory, streams, exit status) is what /usr/bin/cloud-init would have seen."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.component

ASSETS = Path(__file__).resolve().parents[2] / "lima" / "assets" / "debian"
FAKE_MAIN = '''
import gc, os, sys
IMPORTED_IN = os.getpid()
def main(argv):
    if argv[1:] == ["yaml"]:
        return yaml_stage()
    print("argv", " ".join(argv[1:]))
    print("env", os.environ.get("STAGE_ENV"))
    print("cwd", os.getcwd())
    print("forked", os.getpid() != IMPORTED_IN)
    # The stage collects its own garbage; what the server loaded is frozen out of it.
    print("gc", gc.isenabled(), gc.get_freeze_count() > 0)
    print("to stderr", file=sys.stderr)
    return 3 if "--local" in argv else 0


def yaml_stage():
    from cloudinit import safeyaml
    doc = safeyaml.load("a: !!python/unicode x\\nb: [1, 2]\\nc: 2026-12-01\\n")
    print("doc", repr(doc), "python loads", safeyaml.PYTHON_LOADS)
    try:
        safeyaml.load("a: [1\\n")
    except safeyaml.YAMLError as e:
        print("error", str(e).replace("\\n", " "), "python loads", safeyaml.PYTHON_LOADS)
    return 0
'''
# cloud-init 22.4's cloudinit/safeyaml.py, as far as the preload uses it, counting its loads.
FAKE_SAFEYAML = '''
import yaml
YAMLError = yaml.YAMLError
PYTHON_LOADS = 0
class _CustomSafeLoader(yaml.SafeLoader):
    def construct_python_unicode(self, node):
        return super().construct_scalar(node)
_CustomSafeLoader.add_constructor(
    "tag:yaml.org,2002:python/unicode", _CustomSafeLoader.construct_python_unicode)
def load(blob):
    global PYTHON_LOADS
    PYTHON_LOADS += 1
    return yaml.load(blob, Loader=_CustomSafeLoader)
'''


@pytest.fixture
def fake_cloudinit(tmp_path: Path) -> Path:
    pkg = tmp_path / "lib" / "cloudinit" / "cmd"
    pkg.mkdir(parents=True)
    (tmp_path / "lib" / "cloudinit" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(FAKE_MAIN)
    (tmp_path / "lib" / "cloudinit" / "safeyaml.py").write_text(FAKE_SAFEYAML)
    return tmp_path / "lib"


@pytest.fixture
def server(tmp_path: Path, fake_cloudinit: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "ci.sock"
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    # systemctl: a stand-in that records its arguments, first on PATH (never the host's
    # systemd, should the server call it again).
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >>"{tmp_path}/systemctl.log"\n')
    systemctl.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(fake_cloudinit), "LIMAPY_CLOUD_INIT_SOCK": str(sock),
           "NOTIFY_SOCKET": str(notify), "LIMAPY_SYSTEMCTL": str(systemctl),
           "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, str(ASSETS / "cloud-init-preload")], env=env)
    try:
        assert listener.recv(64) == b"READY=1"
        assert sock.exists()
        yield proc, sock
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stage(sock: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "LIMAPY_CLOUD_INIT_SOCK": str(sock), **env}
    return subprocess.run([sys.executable, "-IS", str(ASSETS / "cloud-init-stage"), *args],
                          env=full, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_each_stage_runs_in_a_fork_with_its_own_argv_env_cwd_and_status(
    server: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    proc, sock = server
    local = stage(sock, tmp_path, "init", "--local", STAGE_ENV="first")
    assert local.returncode == 3
    assert local.stdout.splitlines() == [
        "argv init --local", "env first", f"cwd {tmp_path}", "forked True", "gc True True"]
    assert local.stderr.strip() == "to stderr"
    network = stage(sock, tmp_path, "init")
    assert network.returncode == 0
    other = tmp_path / "elsewhere"
    other.mkdir()
    config = stage(sock, other, "modules", "--mode=config", STAGE_ENV="second")
    assert config.returncode == 0
    assert "env second" in config.stdout and f"cwd {other}" in config.stdout
    assert proc.poll() is None  # still serving
    final = stage(sock, tmp_path, "modules", "--mode=final")
    assert final.returncode == 0 and "argv modules --mode=final" in final.stdout
    assert proc.wait(timeout=20) == 0  # its work is done after the final stage
    assert not sock.exists()
    # The unit's raised startup CPU weight is kept through the four stages (until systemd's
    # startup ends): the server never calls systemctl.
    assert not (tmp_path / "systemctl.log").exists()


def test_stages_parse_yaml_with_libyaml_and_report_errors_as_cloud_init_does(
    server: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    import yaml

    if not yaml.__with_libyaml__:
        pytest.fail("this PyYAML has no libyaml: the preload would keep the Python parser")
    _, sock = server
    out = stage(sock, tmp_path, "yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The same document as SafeLoader builds (cloud-init's unicode tag, a date), and the
    # Python loader never ran for it.
    assert lines[0] == "doc {'a': 'x', 'b': [1, 2], 'c': datetime.date(2026, 12, 1)} python loads 0"
    # A broken document goes to cloud-init's own loader: its error, word for word.
    try:
        yaml.safe_load("a: [1\n")
    except yaml.YAMLError as e:
        expected = str(e).replace("\n", " ")
    assert lines[1] == f"error {expected} python loads 1"
    assert out.stderr == ""


def test_without_the_server_the_stage_runs_cloud_init_itself(tmp_path: Path) -> None:
    fallback = tmp_path / "cloud-init"
    fallback.write_text("#!/bin/sh\necho \"direct $*\"\nexit 5\n")
    fallback.chmod(0o755)
    out = stage(tmp_path / "absent.sock", tmp_path, "init", LIMAPY_CLOUD_INIT=str(fallback))
    assert out.returncode == 5
    assert out.stdout.strip() == "direct init"


def test_the_stage_client_imports_no_module_beyond_posix_and_socket(
    server: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    _, sock = server
    full = {"PATH": os.environ["PATH"], "LIMAPY_CLOUD_INIT_SOCK": str(sock),
            "STAGE_ENV": "a=b c"}
    out = subprocess.run(
        [sys.executable, "-IS", "-X", "importtime", str(ASSETS / "cloud-init-stage"),
         "init", "--local"],
        env=full, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    # An environment value with '=' and a space arrives whole.
    assert out.stdout.splitlines()[:2] == ["argv init --local", "env a=b c"]
    imported = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "_socket" in imported
    # Each of these costs every stage tenths of a second under TCG (os alone pulls in
    # stat, posixpath and collections.abc; socket pulls in enum, selectors and re).
    assert not imported & {"os", "socket", "json", "array", "enum", "re", "selectors"}


def _preload_module() -> Any:
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    spec = spec_from_loader("cloud_init_preload", SourceFileLoader(
        "cloud_init_preload", str(ASSETS / "cloud-init-preload")))
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGEX_MODULE = '''
import re
WORD = re.compile(r"(?P<word>[a-z]+)-(\\d+)", re.IGNORECASE)
BYTES = re.compile(rb"^\\x00+$", re.MULTILINE)
'''
# In a fresh interpreter: record the table while importing a module, then in another one
# import it again from the table and compare with what `re` compiles itself.
REGEX_CHILD = '''
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
spec = spec_from_loader("pre", SourceFileLoader("pre", sys.argv[3]))
pre = module_from_spec(spec)
spec.loader.exec_module(pre)
if sys.argv[4] == "write":
    print(pre.write_regex_table(sys.argv[5], ["regexmod"]))
    sys.exit()
from re import _compiler
in_python = _compiler.compile
calls = []
def counting(p, flags=0):
    calls.append(p)
    return in_python(p, flags)
_compiler.compile = counting
used = pre.use_regex_table(sys.argv[5])
import regexmod
_compiler.compile = in_python
same = [regexmod.WORD == in_python(regexmod.WORD.pattern, regexmod.WORD.flags & ~32),
        regexmod.BYTES == in_python(regexmod.BYTES.pattern, regexmod.BYTES.flags)]
print(json.dumps({"used": used, "parsed_in_python": [str(c) for c in calls], "same": same,
                  "match": regexmod.WORD.match("Abc-42").groupdict()}))
'''


def test_the_regex_table_gives_the_patterns_re_compiles_without_parsing_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "regexmod.py").write_text(REGEX_MODULE)
    (tmp_path / "child.py").write_text(REGEX_CHILD)
    table = tmp_path / "table"

    def child(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-I", str(tmp_path / "child.py"), str(tmp_path / "mods"),
             str(tmp_path), str(ASSETS / "cloud-init-preload"), *args],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert child("write", str(table)).strip() == "2"
    result = json.loads(child("read", str(table)))
    assert result["used"] is True
    # Neither pattern went through re's parser and compiler in Python, and both equal
    # (pattern, flags and code) what that compiler makes of them.
    assert result["parsed_in_python"] == []
    assert result["same"] == [True, True]
    assert result["match"] == {"word": "Abc"}


def test_a_regex_table_from_another_python_or_broken_is_not_used(tmp_path: Path) -> None:
    import marshal

    pre = _preload_module()
    table = tmp_path / "table"
    key = pre.regex_table_key()
    entry = {("x", 0): (32, [1, 2, 3], 0, {}, (None,))}
    table.write_bytes(marshal.dumps([["3.0.0", *key[1:]], entry]))
    assert pre.use_regex_table(str(table)) is False
    table.write_bytes(b"not marshal")
    assert pre.use_regex_table(str(table)) is False
    assert pre.use_regex_table(str(tmp_path / "absent")) is False
