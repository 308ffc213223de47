"""Fault injection against the real `limactl` on the tiny guest: one table row per fault.

Each fault below was reported against commit d758687. For each one this script makes a
fresh directory under /tmp holding a private LIMA_HOME (`home/`), a private copy of the
tiny image cache (`XDG_CACHE_HOME`, so a fault that writes through an instance's hard link
into the image cache can never damage the user's real cache), and a copy of
examples/tiny.yaml as `w/t.yaml` (restrictNetwork: guests never reach the network). It
injects the fault, runs the command under test with a cap (`--cap`, default 120 s; the
whole process group is killed at the cap) and gathers the state afterwards with a few
checks. The Markdown table (plus each row's last lines of stderr) is printed at the end.

`--tree DIR` runs `python -m lima.cli` with PYTHONPATH=DIR and cwd=DIR, so another
checkout (e.g. a `git worktree` of an old commit) is what is measured; the host agent
inherits PYTHONPATH, and the header shows which `lima/__init__.py` the CLI imported and
the PYTHONPATH of the first host agent seen, to prove which code ran.

Usage:
  .venv/bin/python benchmarks/faults.py [--tree DIR] [--only NAME[,NAME]] [--cap 120]
                                        [--json FILE] [--list]
NAME is a fault's name (all its variants), `name:variant`, or its number.

Every process started under a fault's LIMA_HOME (found by LIMA_HOME=... in its
environment, or a qemu naming that home on its command line) is SIGCONTed and SIGKILLed
by PID when the fault ends, even on failure or Ctrl-C, and the directory is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
EXAMPLE = REPO / "examples" / "tiny.yaml"
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lima"
DEFAULT_CAP = 120.0
PROBE_CAP = 60.0  # boot_id / status probes: a healthy guest answers in a second or two
AFTER_DELETE_WAIT = 30.0
# Printed by every boot on this machine (no usable KVM); it would crowd out the message.
NOISE = "KVM is not usable here"  # fault 17 counts qemu processes this long after `delete -f`


class SetupFailed(Exception):
    """A preparation step (create, boot, stop) failed: the row says so instead of a result."""

    def __init__(self, what: str, run: Run) -> None:
        super().__init__(what)
        self.what = what
        self.run = run


# --- one command and its outcome ---------------------------------------------------------

@dataclass
class Run:
    """A finished limactl command. rc None: killed at the cap."""

    args: list[str]
    seconds: float
    rc: int | None
    stdout: str
    stderr: str
    cap: float
    maxrss_kb: int = 0

    @property
    def killed(self) -> bool:
        return self.rc is None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def secs(self) -> str:
        return f"> {self.cap:.0f} s (killed)" if self.killed else f"{self.seconds:.1f}"

    def code(self) -> str:
        return "killed" if self.rc is None else str(self.rc)

    def tail(self, n: int = 2) -> str:
        """The last `n` lines of stderr (progress lines `[t] phase  1.0 s` and the KVM
        warning skipped), else of stdout; shortened."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()
                 and not (ln.startswith("[") and ln.rstrip().endswith(" s"))
                 and NOISE not in ln]
        if not lines:  # then the verdict is on stdout (`t: running`)
            lines = [f"(stdout) {ln.strip()}" for ln in self.stdout.splitlines() if ln.strip()]
        text = " / ".join(ln[:220] for ln in lines[-n:])
        return text or "(no output)"


@dataclass
class Background:
    args: list[str]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    start: float


def _wait(proc: subprocess.Popen[bytes], deadline: float | None) -> tuple[int | None, int]:
    """(exit code, max RSS in KiB) of `proc`, or (None, 0) at the deadline. wait4 instead of
    Popen.wait, because its rusage is the only per-child peak memory figure there is."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        if deadline is not None and time.monotonic() >= deadline:
            return None, 0
        time.sleep(0.02)


# --- process facts -----------------------------------------------------------------------

def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _cmdline(pid: int) -> str:
    return _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")


def _proc_state(pid: int) -> str:
    stat = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace")
    return stat[stat.rfind(")") + 2:][:1] if ")" in stat else ""


def alive(pid: int | None) -> bool:
    """Running or stopped; a zombie counts as dead."""
    return pid is not None and _proc_state(pid) not in ("", "Z", "X")


def _environ(pid: int) -> list[bytes]:
    return _read(Path(f"/proc/{pid}/environ")).split(b"\0")


def processes_of(home: Path) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process started under `home`: its environment names
    this LIMA_HOME (limactl, host agents, ssh masters inherit it), or it is a qemu whose
    command line names it. The home is a fresh mkdtemp path, so nothing else matches."""
    needle = b"LIMA_HOME=" + str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if not alive(pid):
            continue
        cmd = _cmdline(pid)
        if needle in _environ(pid) or ("qemu-system" in cmd and str(home) in cmd):
            found.append((pid, cmd))
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(path: Path) -> tuple[int, int, int, str]:
    """(inode, mode, size, sha256): what a shared or modified file changes."""
    st = path.stat()
    return st.st_ino, st.st_mode & 0o7777, st.st_size, _sha256(path)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- one fault's sandbox -----------------------------------------------------------------

@dataclass
class Tree:
    """The checkout under test and the seed image cache every fault copies."""

    path: Path
    cap: float
    seed_cache: Path
    agent_check: list[str] = field(default_factory=list)


class Lab:
    """A fault's private directory: LIMA_HOME, image cache, t.yaml; runs limactl in it."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.cap = tree.cap
        self.base = Path(tempfile.mkdtemp(prefix="lf-", dir="/tmp"))
        self.home = self.base / "home"
        self.work = self.base / "w"
        self.logs = self.base / "logs"
        for d in (self.home, self.work, self.logs):
            d.mkdir()
        # A real copy (no hard links), so a write into an instance's basedisk that reaches
        # the cache reaches only this copy.
        shutil.copytree(tree.seed_cache, self.base / "cache", symlinks=True)
        self.yaml = self.work / "t.yaml"
        shutil.copy(EXAMPLE, self.yaml)
        self.background: list[subprocess.Popen[bytes]] = []
        self._n = 0

    # -- running limactl --

    def env(self) -> dict[str, str]:
        return {**os.environ, "LIMA_HOME": str(self.home), "PYTHONPATH": str(self.tree.path),
                "XDG_CACHE_HOME": str(self.base / "cache")}

    def popen(self, *args: str, stdin: IO[bytes] | int | None = None) -> Background:
        self._n += 1
        # Files, not pipes: a grandchild that keeps a pipe open (an ssh master, a host
        # agent) must not make reading the output hang past the cap.
        out, err = self.logs / f"{self._n}.out", self.logs / f"{self._n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [str(PYTHON), "-m", "lima.cli", *args], cwd=self.tree.path, env=self.env(),
                stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=fo, stderr=fe,
                start_new_session=True,  # its own group, so the cap kills its children too
            )
        self.background.append(proc)
        return Background(list(args), proc, out, err, time.monotonic())

    def finish(self, bg: Background, cap: float | None = None) -> Run:
        cap = self.cap if cap is None else cap
        rc, rss = _wait(bg.proc, bg.start + cap)
        seconds = time.monotonic() - bg.start
        if rc is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bg.proc.pid, signal.SIGKILL)
            _wait(bg.proc, None)
        return Run(bg.args, seconds, rc, bg.out.read_text(errors="replace"),
                   bg.err.read_text(errors="replace"), cap, rss)

    def run(self, *args: str, cap: float | None = None,
            stdin: IO[bytes] | int | None = None) -> Run:
        return self.finish(self.popen(*args, stdin=stdin), cap)

    # -- preparation steps (SetupFailed when they fail) --

    def must(self, what: str, *args: str) -> Run:
        r = self.run(*args)
        if r.rc != 0:
            raise SetupFailed(what, r)
        return r

    def create(self, name: str = "t") -> None:
        self.must(f"create {name}", "create", "--name", name, str(self.yaml))

    def up(self, file: Path | None = None) -> None:
        self.must("apply (boot)", "apply", str(file or self.yaml))
        self._check_agent()

    def down(self, name: str = "t") -> None:
        self.must("stop", "stop", name)

    def _check_agent(self) -> None:
        """Record, once per run, which code the host agent imports (via its PYTHONPATH)."""
        pid = self.pid("ha.pid")
        if self.tree.agent_check or not alive(pid):
            return
        env = [e.decode(errors="replace") for e in _environ(pid or 0)]
        paths = [e.split("=", 1)[1] for e in env if e.startswith("PYTHONPATH=")]
        self.tree.agent_check.append(
            f"host agent pid {pid} runs `{_cmdline(pid or 0).strip()[:60]}...` with "
            f"PYTHONPATH={paths[0] if paths else '(unset)'}")

    # -- observations --

    def inst(self, name: str = "t") -> Path:
        return self.home / name

    def pid(self, file: str, name: str = "t") -> int | None:
        text = _read(self.inst(name) / file).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None

    def qemus(self) -> list[int]:
        return [pid for pid, cmd in processes_of(self.home) if "qemu-system" in cmd]

    def boot_id(self, name: str = "t") -> str | None:
        r = self.run("shell", name, "cat", "/proc/sys/kernel/random/boot_id", cap=PROBE_CAP)
        return r.stdout.strip() if r.rc == 0 and r.stdout.strip() else None

    def status(self, name: str = "t") -> str:
        r = self.run("list", "--format", "json", name, cap=PROBE_CAP)
        with contextlib.suppress(ValueError, IndexError):
            rec = json.loads(r.stdout.splitlines()[0])
            if isinstance(rec, dict):
                return str(rec.get("status", "?"))
        return f"list exit {r.code()}"

    def work_dirs(self) -> list[str]:
        if not self.home.is_dir():
            return []
        return sorted(e.name for e in self.home.iterdir()
                      if e.name.startswith((".creating-", ".deleting-")))

    def guest_after(self, qemu0: int | None, boot0: str | None) -> str:
        """One phrase: did the guest survive (same qemu, same boot) what just happened?"""
        qemu1, boot1 = self.pid("qemu.pid"), self.boot_id()
        parts = []
        if boot1 is None:
            parts.append("guest unreachable")
        elif boot1 != boot0:
            parts.append("guest rebooted (new boot_id)")
        else:
            parts.append("same boot_id")
        if qemu1 == qemu0 and alive(qemu0):
            parts.append("same qemu pid")
        elif alive(qemu0):
            parts.append("old qemu still alive, pid file changed")
        else:
            parts.append("old qemu gone")
        n = len(self.qemus())
        if n != 1:
            parts.append(f"{n} qemu processes")
        parts.append(self.status())
        return ", ".join(parts)

    # -- teardown --

    def cleanup(self) -> None:
        for proc in self.background:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _wait(proc, None)
        for _ in range(10):
            procs = processes_of(self.home)
            if not procs:
                break
            for pid, _cmd in procs:  # a SIGSTOPped agent must run to die cleanly of SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            # Agents first: a surviving agent could start the qemu we are about to end again.
            for pid, _cmd in sorted(procs, key=lambda p: "hostagent" not in p[1]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        shutil.rmtree(self.base, ignore_errors=True)


# --- the faults ----------------------------------------------------------------------------

@dataclass
class Row:
    fault: str
    command: str
    seconds: str
    exit: str
    state: str
    details: list[str] = field(default_factory=list)


def f_delete_path(lab: Lab, variant: str) -> Row:
    arg = {"dot": ".", "empty": "", "dotdot": "../x"}[variant]
    lab.create()
    sentinel = lab.base / "x"  # what `$LIMA_HOME/../x` names
    sentinel.mkdir()
    (sentinel / "keep").write_text("keep\n")
    r = lab.run("delete", arg)
    home_ok = lab.home.is_dir()
    state = (f"LIMA_HOME {'kept' if home_ok else 'DELETED'}, "
             f"instance t {'kept' if (lab.inst() / 'lima.yaml').is_file() else 'GONE'}, "
             f"sentinel {'kept' if (sentinel / 'keep').is_file() else 'DELETED'}")
    return Row("", f"delete {arg or chr(39) * 2}", r.secs(), r.code(), state, [r.tail()])


def f_backing_file(lab: Lab, variant: str) -> Row:
    img = lab.work / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
                    str(img), "64M"], check=True, capture_output=True)
    spec = lab.work / "b.yaml"
    spec.write_text(_tiny_with_image(lab.tree.path, img))
    r = lab.run("create", "--name", "b", str(spec))
    disk = lab.inst("b") / "basedisk"
    if r.rc == 0 and disk.exists():
        info = subprocess.run(["qemu-img", "info", "-U", "--output", "json", str(disk)],
                              capture_output=True, text=True)
        backing = "?"
        with contextlib.suppress(ValueError):
            backing = json.loads(info.stdout).get("backing-filename") or "none"
        state = (f"ACCEPTED: b/basedisk backs onto {backing}" if backing == "/etc/hostname"
                 else f"created, but b/basedisk backing file: {backing}")
    elif r.rc == 0:
        state = "ACCEPTED (no basedisk yet)"
    else:
        state = f"refused; instance b exists: {_yes(lab.inst('b').exists())}"
    return Row("", "create --name b b.yaml (image backed by /etc/hostname)", r.secs(), r.code(),
               state, [r.tail()])


def _tiny_with_image(tree: Path, image: Path) -> str:
    """The tree's tiny template with its images list replaced by `image` alone: with `base:`
    the template's own image would stay as a fallback candidate and hide a refusal."""
    import yaml  # PyYAML: a limapy dependency, so in the venv this script runs with

    template = tree / "lima" / "templates" / "tiny.yaml"
    spec = yaml.safe_load(template.read_text()) if template.is_file() else {}
    spec = spec if isinstance(spec, dict) else {}
    spec["images"] = [{"location": str(image), "arch": "x86_64"}]
    spec.setdefault("vmOpts", {"qemu": {"restrictNetwork": True}})
    return str(yaml.safe_dump(spec, sort_keys=False))


def f_cache_immutable(lab: Lab, variant: str) -> Row:
    lab.create("t")
    lab.create("u")
    cache = sorted(p for p in (lab.base / "cache" / "lima" / "build").glob("tiny-*/*")
                   if p.is_file() and p.name not in ("build.log", "done", "cmdline"))
    watched = {f"u/{n}": lab.inst("u") / n for n in ("basedisk", "initrd", "kernel")}
    watched.update({f"cache/{p.name}": p for p in cache})
    before = {k: _fingerprint(p) for k, p in watched.items() if p.exists()}
    shared = sorted(k for k, fp in before.items()
                    for n in ("basedisk", "initrd")
                    if k.startswith("u/") and (lab.inst("t") / n).exists()
                    and (lab.inst("t") / n).stat().st_ino == fp[0])
    notes = []
    for n in ("basedisk", "initrd"):
        p = lab.inst("t") / n
        try:
            os.chmod(p, 0o600)
            with p.open("ab") as f:
                f.write(b"\0")
        except OSError as exc:
            notes.append(f"t/{n}: {exc}")
    after = {k: _fingerprint(p) for k, p in watched.items() if p.exists()}
    changed = sorted(k for k in before if before[k] != after.get(k))
    state = (f"changed by writing t's files: {', '.join(changed) if changed else 'nothing'}"
             f"; t shares inodes with u: {', '.join(shared) if shared else 'no'}")
    return Row("", "chmod 600 + append 1 byte to t/basedisk, t/initrd", "-", "-", state,
               notes or [f"watched: {', '.join(sorted(before))}"])


def _agent_fault(lab: Lab, inject: Callable[[], None], command: str) -> Row:
    lab.up()
    qemu0, boot0 = lab.pid("qemu.pid"), lab.boot_id()
    inject()
    r = lab.run("apply", str(lab.yaml))
    return Row("", command, r.secs(), r.code(), lab.guest_after(qemu0, boot0), [r.tail()])


def f_truncated_log(lab: Lab, variant: str) -> Row:
    return _agent_fault(lab, lambda: os.truncate(lab.inst() / "ha.stdout.log", 0),
                        "truncate ha.stdout.log; apply t.yaml")


def f_killed_agent(lab: Lab, variant: str) -> Row:
    def inject() -> None:
        os.kill(lab.pid("ha.pid") or 0, signal.SIGKILL)
        time.sleep(0.5)

    return _agent_fault(lab, inject, "kill -9 host agent; apply t.yaml")


def f_lock_symlink(lab: Lab, variant: str) -> Row:
    victim = lab.base / "victim"
    victim.write_bytes(b"precious data, not a lock\n")
    before = _fingerprint(victim)
    (lab.home / "_locks").mkdir()
    (lab.home / "_locks" / "t.lock").symlink_to(victim)
    r = lab.run("create", str(lab.yaml))
    if not victim.is_file():
        verdict = "victim file GONE"
    else:
        after = _fingerprint(victim)
        if after == before:
            verdict = "victim unchanged"
        elif after[2] == 0:
            verdict = "victim file TRUNCATED"
        elif after[3] != before[3]:
            verdict = "victim content CHANGED"
        else:
            verdict = "victim mode/inode changed"
    link = lab.home / "_locks" / "t.lock"
    state = f"{verdict}; t.lock still a symlink: {_yes(link.is_symlink())}"
    return Row("", "create t.yaml (_locks/t.lock -> victim)", r.secs(), r.code(), state,
               [r.tail()])


def f_stopped_agent(lab: Lab, variant: str) -> Row:
    lab.up()
    qemu0, agent = lab.pid("qemu.pid"), lab.pid("ha.pid") or 0
    os.kill(agent, signal.SIGSTOP)
    try:
        r = lab.run("stop", "t")
        left, count = alive(qemu0), len(lab.qemus())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGCONT)
    time.sleep(5)  # what the agent does once it runs again
    state = (f"qemu left after stop: {_yes(left)} ({count} qemu); "
             f"5 s after SIGCONT: {len(lab.qemus())} qemu, {lab.status()}")
    return Row("", "SIGSTOP host agent; stop t", r.secs(), r.code(), state, [r.tail()])


def f_corrupt_yaml(lab: Lab, variant: str) -> Row:
    lab.create()
    target = lab.inst() / "lima.yaml"
    target.write_bytes(random.Random(8).randbytes(2048))
    r = lab.run("apply", str(lab.yaml))
    low = r.stderr.lower()
    names_file = "lima.yaml" in low
    problem = any(w in low for w in ("pars", "decod", "utf", "invalid", "binary", "character",
                                     "corrupt", "unreadable", "not valid", "cannot read",
                                     "not a text", "nul byte", "damaged"))
    state = (f"message shows parse error: {_yes(names_file and problem)}; "
             f"{lab.status()}; instance lima.yaml readable now: "
             f"{_yes(_is_text(target))}")
    return Row("", "garbage t/lima.yaml; apply t.yaml", r.secs(), r.code(), state, [r.tail(3)])


def _is_text(path: Path) -> bool:
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return True


def f_missing_basedisk(lab: Lab, variant: str) -> Row:
    lab.up()
    lab.down()
    (lab.inst() / "basedisk").unlink()
    r = lab.run("apply", str(lab.yaml))
    state = (f"message names basedisk: {_yes('basedisk' in r.output)}; {lab.status()}; "
             f"basedisk back: {_yes((lab.inst() / 'basedisk').exists())}")
    return Row("", "rm t/basedisk (stopped, booted once); apply", r.secs(), r.code(), state,
               [r.tail(3)])


def f_missing_diffdisk(lab: Lab, variant: str) -> Row:
    lab.up()
    lab.down()
    (lab.inst() / "diffdisk").unlink()
    r = lab.run("apply", str(lab.yaml))
    words = ("lost", "gone", "missing", "deleted", "recreat", "empty", "fresh", "data")
    said = [ln for ln in r.output.splitlines()
            if "disk" in ln.lower() and any(w in ln.lower() for w in words)]
    loud = any(w in ln for ln in said for w in ("WARNING", "ERROR", "limactl:"))
    if not said:
        verdict = "no"
    elif r.rc not in (0, None):
        verdict = f"yes, and refuses (exit {r.rc})"
    else:
        verdict = "yes, as a WARNING" if loud else "yes, but only at INFO"
    state = f"says the data is gone: {verdict}; {lab.status()}"
    return Row("", "rm t/diffdisk (stopped, booted once); apply", r.secs(), r.code(), state,
               said[-2:] or [r.tail()])


def f_bad_status(lab: Lab, variant: str) -> Row:
    lab.up()
    status = lab.inst() / "status.json"
    status.unlink()
    if variant == "bytes":
        status.write_bytes(b"\xff\xfe\x80{not json \xc3\x28\n")
    else:
        status.mkdir()
    ra = lab.run("apply", str(lab.yaml))
    rs = lab.run("stop", "t")
    time.sleep(1)
    state = f"qemu left after stop: {len(lab.qemus())}; status.json now: " + (
        "dir" if status.is_dir() else "file" if status.is_file() else "absent")
    what = "invalid UTF-8" if variant == "bytes" else "a directory"
    return Row("", f"status.json = {what}; apply; stop", f"{ra.secs()} / {rs.secs()}",
               f"{ra.code()} / {rs.code()}", state,
               [f"apply: {ra.tail()}", f"stop: {rs.tail()}"])


def f_paused_guest(lab: Lab, variant: str) -> Row:
    # This repo's QMP client, whatever --tree is: the protocol is QEMU's, not limapy's.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lima.drivers.qmp import QMPClient

    lab.up()
    sock = lab.inst() / "qmp.sock"
    with QMPClient(sock, timeout=10) as qmp:
        qmp.execute("stop")
    try:
        r = lab.run("shell", "t", "true")
    finally:
        with QMPClient(sock, timeout=10) as qmp:
            qmp.execute("cont")
    again = lab.run("shell", "t", "true", cap=PROBE_CAP)
    state = f"after QMP cont: shell works: {_yes(again.rc == 0)}; {lab.status()}"
    return Row("", "QMP stop; shell t true", r.secs(), r.code(), state, [r.tail()])


def _with_port(lab: Lab, port: int) -> None:
    with lab.yaml.open("a") as f:
        f.write(f"ssh:\n  localPort: {port}\n")


def f_fixed_port(lab: Lab, variant: str) -> Row:
    port = 60022
    if not _port_free(port):  # someone else's test holds it: measure on another fixed port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    _with_port(lab, port)
    first = lab.must("first apply", "apply", str(lab.yaml))
    lab.down()
    r = lab.run("apply", str(lab.yaml))
    works = lab.run("shell", "t", "true", cap=PROBE_CAP).rc == 0
    state = f"first apply {first.secs()} s; {lab.status()}; shell works: {_yes(works)}"
    return Row("", f"localPort {port}: apply; stop; apply", r.secs(), r.code(), state,
               [r.tail()])


def f_busy_port(lab: Lab, variant: str) -> Row:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        _with_port(lab, port)
        r = lab.run("apply", str(lab.yaml))
        n = len(lab.qemus())
    state = (f"message names the holder (pid {os.getpid()}): {_yes(str(os.getpid()) in r.output)}"
             f"; port named: {_yes(str(port) in r.output)}; {n} qemu")
    return Row("", f"127.0.0.1:{port} held by a listener; apply", r.secs(), r.code(), state,
               [r.tail()])


def f_endless_input(lab: Lab, variant: str) -> Row:
    if variant == "stdin":
        head = subprocess.Popen(["head", "-c", "64M", "/dev/zero"], stdout=subprocess.PIPE)
        assert head.stdout is not None
        try:
            r = lab.run("create", "--name", "z", "-", stdin=head.stdout)
        finally:
            head.stdout.close()  # so head gets EPIPE if limactl stopped reading
            head.kill()
            head.wait()
        command, name = "head -c 64M /dev/zero | create --name z -", "z"
    else:
        fifo = lab.work / "f.yaml"
        os.mkfifo(fifo)
        r = lab.run("create", "--name", "f", str(fifo))
        command, name = "create --name f FIFO (no writer)", "f"
    state = f"peak RSS {r.maxrss_kb // 1024} MiB; instance created: {_yes(lab.inst(name).exists())}"
    if r.killed:
        state = "still running at the cap (RSS unknown); " + state.split("; ", 1)[1]
    return Row("", command, r.secs(), r.code(), state, [r.tail()])


def f_killed_create(lab: Lab, variant: str) -> Row:
    seen, attempts = False, 0
    while not seen and attempts < 5:
        attempts += 1
        bg = lab.popen("create", str(lab.yaml))
        deadline = time.monotonic() + lab.cap
        while bg.proc.poll() is None and time.monotonic() < deadline:
            if any(e.name.startswith(".creating-") for e in lab.home.iterdir()):
                os.kill(bg.proc.pid, signal.SIGKILL)  # the limactl process only, like kill -9
                seen = True
                break
            time.sleep(0.001)
        lab.finish(bg, 5)
        if not seen and lab.inst().exists():  # it finished first: try again from scratch
            lab.run("delete", "-f", "t")
    after_kill = len(lab.work_dirs())
    rl = lab.run("list")
    after_list = len(lab.work_dirs())
    ra = lab.run("apply", str(lab.yaml))
    left = lab.work_dirs()
    state = (f"leftover .creating-*/.deleting-* dirs: {len(left)} (after the kill "
             f"{after_kill}, after list {after_list}); {lab.status()}")
    if not seen:
        state = f"create always finished before the kill ({attempts} tries); " + state
    return Row("", "kill -9 create mid-build; list; apply", f"{rl.secs()} / {ra.secs()}",
               f"{rl.code()} / {ra.code()}", state, [f"apply: {ra.tail()}", *left[:2]])


def f_delete_during_apply(lab: Lab, variant: str) -> Row:
    bg = lab.popen("apply", str(lab.yaml))
    deadline = time.monotonic() + lab.cap
    while bg.proc.poll() is None and time.monotonic() < deadline:
        if (lab.inst() / "qemu.pid").exists():
            break
        time.sleep(0.01)
    rd = lab.run("delete", "-f", "t")
    ra = lab.finish(bg)
    time.sleep(AFTER_DELETE_WAIT)
    state = (f"instance gone: {_yes(not lab.inst().exists())}; "
             f"qemu after {AFTER_DELETE_WAIT:.0f} s: {len(lab.qemus())}; "
             f"work dirs: {len(lab.work_dirs())}")
    return Row("", "apply & (at qemu.pid) delete -f t", f"{rd.secs()} / {ra.secs()}",
               f"{rd.code()} / {ra.code()}", state,
               [f"apply: {ra.tail()}", f"apply stdout: {ra.stdout.strip()[-200:]}",
                f"delete: {rd.tail()}"])


def f_garbage_basedisk(lab: Lab, variant: str) -> Row:
    lab.create()
    # In place, as `head -c 1M /dev/urandom > basedisk` does (same inode).
    with (lab.inst() / "basedisk").open("wb") as f:
        f.write(random.Random(18).randbytes(1 << 20))
    r = lab.run("apply", str(lab.yaml))
    qemu_words = any(w in r.stderr for w in ("qemu-img:", "qemu-system", "not in qcow2 format",
                                             "Could not open", "Image is not"))
    state = f"qemu's/qemu-img's own words in stderr: {_yes(qemu_words)}; {lab.status()}"
    return Row("", "urandom > t/basedisk (created, stopped); apply", r.secs(), r.code(), state,
               [r.tail(3)])


def f_underscore_name(lab: Lab, variant: str) -> Row:
    spec = lab.work / "my_vm.yaml"
    shutil.copy(lab.yaml, spec)
    ra = lab.run("apply", str(spec))
    if ra.rc != 0:
        return Row("", "apply my_vm.yaml; shell my_vm true", ra.secs(), f"{ra.code()} / -",
                   "apply failed, shell not tried", [ra.tail()])
    r = lab.run("shell", "my_vm", "true")
    state = f"shell works: {_yes(r.rc == 0)}; apply took {ra.secs()} s"
    return Row("", "apply my_vm.yaml; shell my_vm true", r.secs(), f"{ra.code()} / {r.code()}",
               state, [r.tail()])


@dataclass(frozen=True)
class Fault:
    number: int
    name: str
    run: Callable[[Lab, str], Row]
    variants: tuple[str, ...] = ("",)


FAULTS = (
    Fault(1, "delete-path", f_delete_path, ("dot", "empty", "dotdot")),
    Fault(2, "backing-file", f_backing_file),
    Fault(3, "cache-immutable", f_cache_immutable),
    Fault(4, "truncated-log", f_truncated_log),
    Fault(5, "killed-agent", f_killed_agent),
    Fault(6, "lock-symlink", f_lock_symlink),
    Fault(7, "stopped-agent", f_stopped_agent),
    Fault(8, "corrupt-yaml", f_corrupt_yaml),
    Fault(9, "missing-basedisk", f_missing_basedisk),
    Fault(10, "missing-diffdisk", f_missing_diffdisk),
    Fault(11, "bad-status", f_bad_status, ("bytes", "dir")),
    Fault(12, "paused-guest", f_paused_guest),
    Fault(13, "fixed-port", f_fixed_port),
    Fault(14, "busy-port", f_busy_port),
    Fault(15, "endless-input", f_endless_input, ("stdin", "fifo")),
    Fault(16, "killed-create", f_killed_create),
    Fault(17, "delete-during-apply", f_delete_during_apply),
    Fault(18, "garbage-basedisk", f_garbage_basedisk),
    Fault(19, "underscore-name", f_underscore_name),
)


def select(only: str | None) -> list[tuple[Fault, str]]:
    """(fault, variant) pairs picked by `--only` (names, name:variant, or numbers)."""
    wanted = {w.strip() for w in only.split(",")} if only else None
    picked = []
    for fault in FAULTS:
        for variant in fault.variants:
            keys = {fault.name, str(fault.number), f"{fault.name}:{variant}"}
            if wanted is None or keys & wanted:
                picked.append((fault, variant))
    if wanted:
        known = {k for f in FAULTS for v in f.variants for k in (f.name, str(f.number),
                                                                   f"{f.name}:{v}")}
        unknown = wanted - known
        if unknown:
            raise SystemExit(f"unknown fault(s): {', '.join(sorted(unknown))} (see --list)")
    return picked


def run_fault(tree: Tree, fault: Fault, variant: str) -> Row:
    label = f"{fault.number} {fault.name}" + (f":{variant}" if variant else "")
    lab = Lab(tree)
    start = time.monotonic()
    try:
        row = fault.run(lab, variant)
    except SetupFailed as exc:
        row = Row("", f"(setup) {' '.join(exc.run.args)}", exc.run.secs(), exc.run.code(),
                  f"setup failed: {exc.what}", [exc.run.tail(3)])
    except Exception as exc:  # a broken fault must not hide the other rows
        row = Row("", "-", "-", "-", f"script error: {type(exc).__name__}: {exc}")
    finally:
        lab.cleanup()
    row.fault = label
    _say(f"  {label}: seconds {row.seconds}, exit {row.exit}: {row.state} "
         f"({time.monotonic() - start:.0f} s)")
    return row


# --- the run -------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def seed_cache(tree: Path, cap: float) -> Iterator[Path]:
    """A private image cache holding the tiny image the tree under test uses: the user's
    tiny builds and KVM probe result copied, the .deb cache linked (read only by a
    rebuild), then one `create` so a tree whose image differs builds it once, here."""
    seed = Path(tempfile.mkdtemp(prefix="lf-seed-", dir="/tmp"))
    try:
        build = seed / "lima" / "build"
        build.mkdir(parents=True)
        for p in USER_CACHE.glob("build/tiny-*"):
            if p.is_dir():
                shutil.copytree(p, build / p.name)
            else:
                shutil.copy2(p, build / p.name)
        for name in ("build/apt-show.json", "accel.json"):
            if (USER_CACHE / name).is_file():
                shutil.copy2(USER_CACHE / name, seed / "lima" / name)
        if (USER_CACHE / "build" / "debs").is_dir():
            (build / "debs").symlink_to(USER_CACHE / "build" / "debs")
        lab = Lab(Tree(tree, max(cap, 900.0), seed))
        try:
            r = lab.run("create", "--name", "warm", str(lab.yaml))
            if r.rc != 0:
                raise SystemExit(f"warm-up create failed (exit {r.code()}): {r.tail(5)}")
            # The instance's files may be links into the lab's copy: bring the tree's
            # image (if it was built just now) back into the seed.
            for p in (lab.base / "cache" / "lima" / "build").glob("tiny-*"):
                if (build / p.name).exists():
                    continue
                if p.is_dir():
                    shutil.copytree(p, build / p.name)
                else:
                    shutil.copy2(p, build / p.name)
        finally:
            lab.cleanup()
        yield seed
    finally:
        shutil.rmtree(seed, ignore_errors=True)


def describe_tree(tree: Path) -> list[str]:
    """Which commit, how dirty, and which lima package `python -m lima.cli` imports there."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                              text=True).stdout.strip()

    dirty = len([ln for ln in git("status", "--porcelain").splitlines() if ln.strip()])
    imported = subprocess.run(
        [str(PYTHON), "-c", "import lima; print(lima.__file__)"], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
    ).stdout.strip()
    if not imported.startswith(str(tree)):
        raise SystemExit(f"{tree}: python imports lima from {imported}, not from the tree")
    return [f"tree: {tree} at {git('rev-parse', '--short', 'HEAD')} "
            f"({git('log', '-1', '--format=%s')[:70]}...), {dirty} uncommitted paths",
            f"limactl imports {imported}; lima/names.py present: "
            f"{_yes((tree / 'lima' / 'names.py').exists())}"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(header: Sequence[str], rows: Sequence[Row]) -> str:
    out = [*(f"- {h}" for h in header), "",
           "| fault | command | seconds | exit | state afterwards |",
           "|---|---|---|---|---|"]
    out += [f"| {_cell(r.fault)} | `{_cell(r.command)}` | {_cell(r.seconds)} | "
            f"{_cell(r.exit)} | {_cell(r.state)} |" for r in rows]
    out += ["", "Last stderr lines per fault:", ""]
    for r in rows:
        for d in r.details:
            out.append(f"- {r.fault}: {_cell(d)}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tree", type=Path, default=REPO,
                    help="limapy checkout to run (PYTHONPATH and cwd); default: this repo")
    ap.add_argument("--only", default=None, help="NAME[,NAME]: fault names, name:variant or "
                    "numbers (see --list)")
    ap.add_argument("--cap", type=float, default=DEFAULT_CAP,
                    help="seconds before a command is killed (default %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    args = ap.parse_args(argv)
    if args.list:
        for fault in FAULTS:
            print(f"{fault.number:2} {fault.name}"
                  + (f" ({', '.join(fault.variants)})" if fault.variants != ("",) else ""))
        return 0
    picked = select(args.only)
    tree = args.tree.resolve()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load0 = os.getloadavg()
    header = [*describe_tree(tree),
              f"started {started}; cap {args.cap:.0f} s; machine: {os.cpu_count()} cores "
              f"shared with other engineers' test runs (load at start "
              f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}), so times are noisy"]
    for line in header:
        _say(line)
    rows: list[Row] = []
    with seed_cache(tree, args.cap) as seed:
        state = Tree(tree, args.cap, seed)
        for fault, variant in picked:
            rows.append(run_fault(state, fault, variant))
    load1 = os.getloadavg()
    header.append(f"finished {time.strftime('%H:%M:%S')}; load at end "
                  f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    header += state.agent_check or ["no host agent was seen running"]
    text = markdown(header, rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
