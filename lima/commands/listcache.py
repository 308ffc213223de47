"""What `limactl list` reads from each instance's lima.yaml, cached in
`$LIMA_HOME/_cache/list.json`, so listing 50 instances neither imports lima.schemas nor
resolves and validates 50 documents again.

Called by lima.commands.listing (`spec_facts` per instance, `save` once at the end). An
entry is used only when all that the resolution depends on is unchanged: the lima.yaml
file (device, inode, size, mtime and ctime, as git's index does; one changed in the last
2 s is not cached), limapy's code (every lima/*.py file's size and mtime), and the host inputs
of lima.schemas.hostfacts.host_facts() (HOST_INPUTS names them; a test checks they cover
every HostFacts field) plus LIMA_TEMPLATES_PATH. A document naming other files (`base:`,
`file:`) is never cached. The cache is only an optimisation: a file that cannot be read
or written is ignored.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from lima import paths

CACHE_VERSION = 1
# A file changed this recently is not cached: a second change within the file system's
# timestamp granularity could leave size, mtime and ctime as they were ("racy git").
RACY_NS = 2_000_000_000
# HostFacts field -> where host_facts() reads it from (the key below reads the same).
HOST_INPUTS = {
    "arch": "os.uname().machine", "cpus": "os.cpu_count()",
    "memory": "sysconf SC_PAGE_SIZE * SC_PHYS_PAGES", "user": "pwd entry", "uid": "getuid",
    "comment": "pwd entry", "home": "$HOME, pwd entry", "timezone": "/etc/timezone, "
    "/etc/localtime", "machine_id": "/etc/machine-id, /var/lib/dbus/machine-id",
    "tempdir": "$TMPDIR",
}

# A key that makes the document read another file: such a document is never cached.
_NAMES_FILES = re.compile(rb"(?m)(?:^|[\s{,-])(?:base|file)\s*:")

_state: dict[str, Any] = {}


def reset() -> None:
    """Forget what this process read: the list verb starts from the file every time."""
    _state.clear()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _fingerprint() -> list[Any]:
    root = Path(__file__).resolve().parents[1]  # the lima package
    code = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                st = os.stat(os.path.join(dirpath, f))
                code.append((os.path.relpath(os.path.join(dirpath, f), root), st.st_size,
                             st.st_mtime_ns))
    try:
        memory = [os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")]
    except (ValueError, OSError):
        memory = []
    import pwd

    host = [os.uname().machine, os.cpu_count(), memory, list(pwd.getpwuid(os.getuid())),
            os.environ.get("HOME"), _read("/etc/timezone"), _readlink("/etc/localtime"),
            _read("/etc/machine-id"), _read("/var/lib/dbus/machine-id"),
            os.environ.get("TMPDIR"), os.environ.get("LIMA_TEMPLATES_PATH")]
    # Compared as it is (no hash: loading OpenSSL for hashlib costs more than the compare).
    fingerprint: list[Any] = json.loads(json.dumps([CACHE_VERSION, code, host], default=str))
    return fingerprint


def _cache_file() -> Path:
    return paths.lima_home() / "_cache" / "list.json"


def _load() -> dict[str, Any]:
    if not _state:
        _state["fingerprint"] = _fingerprint()
        _state["dirty"] = False
        try:
            st = os.lstat(_cache_file().parent)
            ours = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            data = json.loads(_cache_file().read_text()) if ours else {}
        except (OSError, ValueError):
            data = {}
        ok = isinstance(data, dict) and data.get("fingerprint") == _state["fingerprint"]
        _state["entries"] = data.get("entries", {}) if ok else {}
        _state["hostArch"] = data.get("hostArch") if ok else None
    return _state


def host_arch() -> str:
    """The host's arch in Lima's spelling (lima.schemas.arch), cached with the rest."""
    state = _load()
    if not isinstance(state["hostArch"], str):
        from lima.schemas.arch import host_arch as real

        state["hostArch"], state["dirty"] = real(), True
    return str(state["hostArch"])


def spec_facts(name: str, yaml_file: Path) -> dict[str, Any]:
    """{"spec": {vmType, arch, cpus, memory, disk, sshLocalPort, message, config}} or
    {"problems": [str, ...]} for the instance's lima.yaml, from the cache when valid."""
    state = _load()
    try:
        st = os.stat(yaml_file)
        key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS
    except OSError:
        key, settled = [], False
    entry = state["entries"].get(name)
    if key and isinstance(entry, dict) and entry.get("stat") == key:
        return entry
    from lima import schemas
    from lima.errors import SpecError

    try:
        spec = schemas.load_instance(name).spec
    except SpecError as exc:
        entry = {"stat": key, "problems": [str(p) for p in exc.problems]}
    else:
        entry = {"stat": key, "spec": {
            "vmType": spec.vm_type, "arch": spec.arch, "cpus": spec.cpus,
            "memory": spec.memory, "disk": spec.disk, "sshLocalPort": spec.ssh.local_port,
            "message": spec.message, "config": dict(spec.raw)}}
    try:
        text = yaml_file.read_bytes()
    except OSError:
        text = b""
    if settled and text and not _NAMES_FILES.search(text):
        state["entries"][name] = entry
        state["dirty"] = True
    return entry


def save(names: list[str]) -> None:
    """Write the cache back when it changed, keeping the entries of `names` only."""
    if not _state or not _state["dirty"]:
        return
    from lima.drivers.safefs import ensure_owned_dir
    from lima.errors import LimaError
    from lima.fsutil import atomic_write

    entries = {n: e for n, e in _state["entries"].items() if n in names}
    data = {"fingerprint": _state["fingerprint"], "hostArch": _state["hostArch"],
            "entries": entries}
    try:
        ensure_owned_dir(_cache_file().parent)  # not a symlink, 0700, ours
        atomic_write(_cache_file(), json.dumps(data, separators=(",", ":")), mode=0o600,
                     sync=False)
    except (OSError, LimaError):  # a read-only or odd LIMA_HOME: listed all the same
        return
    _state["dirty"] = False
