"""build:debian-12's cloud-init preload server and stage client (lima/assets/debian), run on
the host against a stand-in `cloudinit` package: what a stage sees (argv, environment,
working directory, streams, exit status) is what /usr/bin/cloud-init would have seen."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.component

ASSETS = Path(__file__).resolve().parents[2] / "lima" / "assets" / "debian"
FAKE_MAIN = '''
import gc, os, sys, time
IMPORTED_IN = os.getpid()
time.sleep(float(os.environ.get("FAKE_IMPORT_SECONDS", "0")))  # a slow import
def main(argv):
    if argv[1:] == ["yaml"]:
        return yaml_stage()
    if argv[1:] == ["hang"]:
        import time
        with open(os.environ["HANG_PID"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        return 0
    if argv[1:] == ["process"]:
        import resource, signal
        print("sigint", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        print("sigquit", signal.getsignal(signal.SIGQUIT) == signal.SIG_DFL)
        print("nofile", *resource.getrlimit(resource.RLIMIT_NOFILE))
        return 0
    print("argv", " ".join(argv[1:]))
    print("env", os.environ.get("STAGE_ENV"))
    print("cwd", os.getcwd())
    print("forked", os.getpid() != IMPORTED_IN)
    # The stage collects its own garbage; what the server loaded is frozen out of it.
    print("gc", gc.isenabled(), gc.get_freeze_count() > 0)
    if os.environ.get("STAGE_PID"):
        print("pid", os.getpid())
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


@contextlib.contextmanager
def serving(tmp_path: Path, fake_cloudinit: Path, sock: str, *,
            popen: dict[str, Any] | None = None, fds: dict[int, int] | None = None,
            **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The preload server on `sock`, once it said it is listening; killed afterwards.
    `popen`: more of Popen's arguments; `fds`: descriptors of this process the server gets
    at other numbers (number: descriptor)."""
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    full = {**os.environ, "PYTHONPATH": str(fake_cloudinit), "LIMAPY_CLOUD_INIT_SOCK": sock,
            "NOTIFY_SOCKET": str(notify), "LIMAPY_CGROUP_ROOT": str(tmp_path / "no-cgroups"),
            **env}

    def as_the_initramfs_starts_it() -> None:
        # A background job of a non-interactive shell: SIGINT and SIGQUIT ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        for number, fd in (fds or {}).items():
            os.dup2(fd, number)  # kept: the number is in pass_fds

    with (tmp_path / "server.err").open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(ASSETS / "cloud-init-preload")],
                                env=full, stderr=err, preexec_fn=as_the_initramfs_starts_it,
                                **(popen or {}))
    try:
        assert listener.recv(64) == b"READY=1"
        yield proc
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def server(tmp_path: Path, fake_cloudinit: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "ci.sock"
    with serving(tmp_path, fake_cloudinit, str(sock)) as proc:
        assert sock.exists()
        yield proc, sock


def stage(sock: Path | str, cwd: Path, *args: str, uid: int | None = None,
          **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "LIMAPY_CLOUD_INIT_SOCK": str(sock), **env}
    # Another user runs Debian's python3 (installed by scripts/bootstrap with python3-venv):
    # the test's own interpreter may sit in a home only root can read.
    python = sys.executable if uid is None else DEBIAN_PYTHON
    return subprocess.run([python, "-IS", str(ASSETS / "cloud-init-stage"), *args],
                          env=full, cwd=cwd, capture_output=True, text=True, timeout=60,
                          user=uid)


DEBIAN_PYTHON = "/usr/bin/python3"
# Another user (65534, nobody) on the other end of the socket.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another user")


def abstract_name() -> str:
    return f"@limapy-test-{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def other_listener(name: str, after_accept: str, python: str = sys.executable,
                   user: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """A process other than the preload server listening on abstract socket `name`: it
    accepts one connection as `c`, then runs `after_accept`; killed afterwards."""
    proc = subprocess.Popen(
        [python, "-c", "import socket, sys\n"
         "s = socket.socket(socket.AF_UNIX)\n"
         "s.bind('\\0' + sys.argv[1][1:]); s.listen(1); print('up', flush=True)\n"
         f"c, _ = s.accept()\n{after_accept}\n", name],
        stdout=subprocess.PIPE, text=True, user=user)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def direct_cloud_init(tmp_path: Path) -> Path:
    """A stand-in for /usr/bin/cloud-init run directly: it says so and exits 5."""
    fallback = tmp_path / "cloud-init"
    fallback.write_text("#!/bin/sh\necho \"direct $*\"\nexit 5\n")
    fallback.chmod(0o755)
    return fallback


def own_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    pytest.skip("this host has no cgroup v2 (unified) hierarchy")


def _abstract_names() -> set[str]:
    with open("/proc/net/unix") as f:
        return {line.split()[-1] for line in f if line.split()[-1].startswith("@")}


def test_a_paused_boots_preload_names_the_import_done(tmp_path: Path,
                                                     fake_cloudinit: Path) -> None:
    """The initramfs of a paused first boot waits for @NAME (LIMAPY_IMPORTED_SOCK): bound
    once cloud-init is imported; the stages still run, and the name goes with the server."""
    name = f"@limapy-test-imported-{os.getpid()}"
    assert name not in _abstract_names()
    sock = tmp_path / "ci.sock"
    with serving(tmp_path, fake_cloudinit, str(sock), LIMAPY_IMPORTED_SOCK=name,
                 FAKE_IMPORT_SECONDS="1.5"):
        assert name not in _abstract_names()  # listening, still importing
        deadline = time.monotonic() + 20
        while name not in _abstract_names() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert name in _abstract_names()
        out = stage(sock, tmp_path, "init", "--local")
        assert "argv init --local" in out.stdout and "forked True" in out.stdout, out
    assert name not in _abstract_names()


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


def test_on_an_abstract_socket_each_stage_moves_into_the_requesting_units_cgroup(
    tmp_path: Path, fake_cloudinit: Path,
) -> None:
    # The guest's server binds @limapy-cloud-init (nothing in the file system: systemd
    # mounts /run after the initramfs started it); the stage's child writes its pid into
    # the cgroup.procs of the cgroup the stage client (the unit's process) runs in.
    name = abstract_name()
    cgroots = tmp_path / "cgroup"
    unit = cgroots / own_cgroup().lstrip("/")
    unit.mkdir(parents=True)
    with serving(tmp_path, fake_cloudinit, name, LIMAPY_CGROUP_ROOT=str(cgroots)) as proc:
        out = stage(name, tmp_path, "init", "--local", STAGE_PID="1")
        assert out.returncode == 3, out.stderr
        child = int(out.stdout.splitlines()[-1].removeprefix("pid "))
        assert child != proc.pid
        assert (unit / "cgroup.procs").read_text() == str(child)
        assert stage(name, tmp_path, "modules", "--mode=final").returncode == 0
        assert proc.wait(timeout=20) == 0
    # One line per stage, at the kernel log's info level (the guest's server writes to it).
    lines = (tmp_path / "server.err").read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"<6>cloud-init-preload: 'init --local' runs as pid {child} "
                               f"in {own_cgroup()} (cloud-init imported in ")
    assert lines[1].startswith("<6>cloud-init-preload: 'modules --mode=final' runs as pid ")


@needs_root
def test_the_server_refuses_a_stage_from_another_user(
    tmp_path: Path, fake_cloudinit: Path,
) -> None:
    # What cloud-init-stage sends, from uid 65534 (nobody), without the client's own check
    # of the server's user: the server closes the connection without running anything.
    name = abstract_name()
    request = "import socket, sys\n" \
        "c = socket.socket(socket.AF_UNIX)\n" \
        "c.connect('\\0' + sys.argv[1][1:])\n" \
        "try:\n" \
        "    c.sendmsg([b'2\\0/\\0/usr/bin/cloud-init\\0init'], [(socket.SOL_SOCKET, " \
        "socket.SCM_RIGHTS, bytes(4) + (1).to_bytes(4, sys.byteorder) * 2)])\n" \
        "    c.shutdown(socket.SHUT_WR)\n" \
        "    print(repr(c.recv(64)))\n" \
        "except (BrokenPipeError, ConnectionResetError):\n    print('reset')\n"
    with serving(tmp_path, fake_cloudinit, name) as proc:
        out = subprocess.run([DEBIAN_PYTHON, "-c", request, name], capture_output=True,
                             text=True, timeout=60, user=65534, cwd="/")
        assert out.returncode == 0, out.stderr
        assert out.stdout in ("b''\n", "reset\n")  # no status
        assert proc.poll() is None
    err = (tmp_path / "server.err").read_text()
    assert "from uid 65534" in err and "refused" in err


@needs_root
def test_the_stage_runs_cloud_init_itself_when_the_server_is_another_user(
    tmp_path: Path,
) -> None:
    name = abstract_name()
    with other_listener(name, "print(len(c.recv(4096)), flush=True)", python=DEBIAN_PYTHON,
                        user=65534) as squatter:
        out = stage(name, tmp_path, "init", LIMAPY_CLOUD_INIT=str(direct_cloud_init(tmp_path)))
        assert out.returncode == 5
        assert out.stdout.strip() == "direct init"
        # The squatter got the connection, but no request: nothing of the stage's.
        assert squatter.stdout is not None and squatter.stdout.readline() == "0\n"


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
    fallback = direct_cloud_init(tmp_path)
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


def test_a_stage_has_the_signals_and_limits_of_its_unit(
    tmp_path: Path, fake_cloudinit: Path,
) -> None:
    # The server started with SIGINT and SIGQUIT ignored (as the initramfs's shell leaves
    # them) and the host's limits; the stage gets Python's SIGINT handler, SIGQUIT's
    # default and its client's (the unit's) limits.
    name = abstract_name()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    mine = (min(soft, 512) - 1, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, mine)

    with serving(tmp_path, fake_cloudinit, name):
        full = {"PATH": os.environ["PATH"], "LIMAPY_CLOUD_INIT_SOCK": name}
        out = subprocess.run([sys.executable, "-IS", str(ASSETS / "cloud-init-stage"),
                              "process"], env=full, cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, preexec_fn=lower)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["sigint True", "sigquit True",
                                       f"nofile {mine[0]} {mine[1]}"]


def test_a_stage_whose_client_is_killed_gets_sigterm(
    tmp_path: Path, fake_cloudinit: Path,
) -> None:
    # systemctl stop of a unit with KillMode=process (cloud-final.service) kills only the
    # client: the stage it asked for must not run on, unowned.
    name = abstract_name()
    hang = tmp_path / "hang.pid"
    with serving(tmp_path, fake_cloudinit, name) as proc:
        client = subprocess.Popen(
            [sys.executable, "-IS", str(ASSETS / "cloud-init-stage"), "hang"],
            env={"PATH": os.environ["PATH"], "LIMAPY_CLOUD_INIT_SOCK": name,
                 "HANG_PID": str(hang)}, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while not (hang.exists() and hang.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(hang.read_text())
        client.kill()
        client.wait()
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists()
        assert proc.poll() is None  # and the server serves on
        out = stage(name, tmp_path, "init", "--local")
        assert out.returncode == 3


def test_the_stage_runs_cloud_init_itself_when_the_server_ends_before_accepting(
    tmp_path: Path,
) -> None:
    # A server that reads the request and ends without its "+" (it died importing
    # cloud-init, say): nothing of the stage ran, so the client runs cloud-init itself.
    name = abstract_name()
    with other_listener(name, "while c.recv(4096): pass"):
        out = stage(name, tmp_path, "init", LIMAPY_CLOUD_INIT=str(direct_cloud_init(tmp_path)))
        assert (out.returncode, out.stdout.strip(), out.stderr) == (5, "direct init", "")


def _wait_bound(name: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while name not in _abstract_names() and proc.poll() is None:
        assert time.monotonic() < deadline, f"{name} never bound"
        time.sleep(0.05)


@contextlib.contextmanager
def early_preload(tmp_path: Path, fake_cloudinit: Path, manifest: str,
                  ) -> Iterator[tuple[subprocess.Popen[bytes], str, int, int]]:
    """The preload as an early pause's initramfs starts it from its copy: LIMAPY_NEW_ROOT
    names `root` under fd 3 (here a symlink to this host's /), fd 4 takes the answer, and
    stdin gives the go line. Yields the server, its socket's name, the go line's pipe and
    the answer's pipe, once cloud-init is imported."""
    outer = tmp_path / "initramfs"
    outer.mkdir()
    (outer / "root").symlink_to("/")
    (tmp_path / "files").write_text(manifest)
    sock, imported = abstract_name(), abstract_name()
    go_r, go_w = os.pipe()
    answer_r, answer_w = os.pipe()
    outer_fd = os.open(outer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with serving(tmp_path, fake_cloudinit, sock, LIMAPY_IMPORTED_SOCK=imported,
                     LIMAPY_NEW_ROOT="root", LIMAPY_PRELOAD_MANIFEST=str(tmp_path / "files"),
                     popen={"stdin": go_r, "pass_fds": (3, 4)},
                     fds={3: outer_fd, 4: answer_w}) as proc:
            os.close(answer_w)
            os.close(go_r)
            _wait_bound(imported, proc)
            assert imported in _abstract_names()
            yield proc, sock, go_w, answer_r
    finally:
        for fd in (go_w, answer_r, outer_fd, answer_w, go_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def _answer(fd: int) -> str:
    with os.fdopen(fd, "rb", closefd=False) as f:
        return f.readline().decode()


def _manifest(*paths: Path) -> str:
    return "".join(f"{p.stat().st_size} {int(p.stat().st_mtime)} {p}\n" for p in paths)


@needs_root
def test_an_early_preload_moves_into_the_new_root_on_the_go_line_and_serves(
        tmp_path: Path, fake_cloudinit: Path) -> None:
    """The copy's files all there as listed: it answers ok, and serves the stages."""
    listed = tmp_path / "listed.py"
    listed.write_text("x = 1\n")
    with early_preload(tmp_path, fake_cloudinit, _manifest(listed)) as (proc, sock, go, ans):
        time.sleep(0.3)
        assert proc.poll() is None  # waiting for the go line
        os.write(go, b"go\n")
        assert _answer(ans) == "ok\n"
        out = stage(sock, Path("/"), "init", "--local")
        assert out.returncode == 3 and "forked True" in out.stdout, out
        assert "cwd /" in out.stdout
    assert "not serving" not in (tmp_path / "server.err").read_text()


@needs_root
def test_an_early_preload_whose_copy_differs_from_the_disk_ends_before_serving(
        tmp_path: Path, fake_cloudinit: Path) -> None:
    """A listed file whose size or mtime is not the copy's (an upgraded cloud-init on
    the instance's disk): it answers why, its name already free, and the stages run
    cloud-init themselves."""
    listed = tmp_path / "listed.py"
    listed.write_text("x = 1\n")
    manifest = _manifest(listed)
    listed.write_text("x = 22\n")
    with early_preload(tmp_path, fake_cloudinit, manifest) as (proc, sock, go, ans):
        os.write(go, b"go\n")
        answer = _answer(ans)
        assert answer.startswith(f"{listed}: 7 bytes"), answer
        assert sock not in _abstract_names()
        assert proc.wait(timeout=20) == 0
        out = stage(sock, tmp_path, "init", LIMAPY_CLOUD_INIT=str(direct_cloud_init(tmp_path)))
        assert (out.returncode, out.stdout) == (5, "direct init\n"), out
    assert "not serving this boot's stages" in (tmp_path / "server.err").read_text()


@needs_root
def test_an_early_preload_without_a_go_line_never_serves(
        tmp_path: Path, fake_cloudinit: Path) -> None:
    """Its stdin closed with no line (the initramfs gave up on it): no move, no stage."""
    with early_preload(tmp_path, fake_cloudinit, "") as (proc, sock, go, ans):
        os.close(go)
        assert _answer(ans) == "no go line from the initramfs\n"
        assert proc.wait(timeout=20) == 0
        out = stage(sock, tmp_path, "init", LIMAPY_CLOUD_INIT=str(direct_cloud_init(tmp_path)))
        assert out.stdout == "direct init\n", out
