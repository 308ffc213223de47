"""Boot figures of issue 4: limapy's `limactl apply` against a plain qemu + ssh script.

For each example (examples/tiny.yaml, examples/default.yaml) in a private LIMA_HOME under
/tmp (unix socket paths are short), this prints:
1. limapy: `limactl apply FILE` start -> ssh_ready and -> running, read from the progress
   lines apply prints on stderr (`[tiny] ssh_ready   4.8 s`), stamped when each line
   arrives (apply skips a line when one pass crosses two phases: a later phase's line, or
   its final `NAME: running` on stdout, then counts); plus the host agent's event times
   (ha.stdout.log) and the agent's and qemu's start times (/proc/PID/stat) for the
   breakdown. One cold run (create included), then runs from a stopped instance.
2. baseline: the SAME qemu command line (lima.drivers.qemu.qemu_argv on a copy of the
   instance's files: kernel/initrd/basedisk linked, a fresh qcow2 overlay over the stopped
   instance's diffdisk, cidata rebuilt with a new instance-id) started directly, plus the
   one host-side server that command line needs: with hostResolver (the examples' default)
   its `char-dns` chardev connects to dns.sock, which the benchmark serves with the host
   agent's own DNS server (lima.drivers.hostagent.dns, in a thread, the config the host
   agent gets: same answers, nothing forwarded off the machine on a restricted network).
   Without a listener there qemu 7.2 keeps running (it logs `Unable to connect character
   device char-dns` and retries) but the guest never reaches its kernel: the vCPU runs
   through zeroed memory with paging off, the serial log stays empty. Leaving the chardev
   out, or pointing the guest elsewhere, would change the command line or the guest's
   lookups; serving it changes neither. Then ssh as limapy's host agent does it: sshd's
   banner is awaited with raw TCP probes under limapy's policy (ProbePolicy: up to 4
   overlapping probes every 0.25 s while a probe may stall on a guest NIC that is not up,
   one at a time once the guest closes one), then the system `ssh -F ssh.config` logs in,
   one attempt at a time (0.25 s apart) through a ControlMaster connection that later
   polls reuse: qemu start -> first login that reads this boot's IID in
   /run/lima-ssh-ready, and -> /run/lima-boot-done holds the IID. limapy and baseline
   runs are interleaved (ABAB..., order alternating) so machine load hits both alike.
3. a converged `limactl apply` (instance running, nothing to do): median of 10 runs,
   process start-up included.
4. stop: `limactl stop NAME` wall time; QMP `system_powerdown` -> qemu exit, measured on
   the baseline's qemu (and read from the host agent's log for limapy's).
5. cold pairs (--cold N): a new instance's `limactl apply` (create included) -> running,
   interleaved: its first boot loading the boot template (lima.drivers.boottemplate) that
   the cold run of 1. saved in the benchmark's own template directory, and the same with
   LIMA_BOOT_TEMPLATES=0; against each other and the baseline's boot-done median.
Each boot's line also shows the share of the machine's CPU its hypervisor took meanwhile
(steal, from /proc/stat: on a shared host the same boot's time moves with it), qemu's CPU
seconds at the end (the guest's work, which steal does not inflate) and, for limapy, the
CPU of `limactl apply` and the host agent (CPU the guest's vCPUs could not have).

Usage: .venv/bin/python benchmarks/boot.py [--only tiny|default] [--runs 3] [--cold 2]
       [--pycache] [--keep DIR]  (DIR/EXAMPLE/NN-limapy-serial.log, ...: each run's logs, kept)
(--pycache: limactl caches bytecode under the benchmark home even when the environment
sets PYTHONDONTWRITEBYTECODE, as an installed limapy would have .pyc files.)
Guests use user networking with restrict=on (nothing leaves the machine). Every qemu and
host agent started here is stopped by PID, and the benchmark LIMA_HOME is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lima.drivers import boottemplate, procs  # noqa: E402 (after the sys.path line above)

if TYPE_CHECKING:
    from lima.drivers.hostagent.dns import ResolverConfig

EXAMPLES = {"tiny": REPO / "examples" / "tiny.yaml", "default": REPO / "examples" / "default.yaml"}
APPLY_TIMEOUT = {"tiny": 180.0, "default": 900.0}
PROBE_INTERVAL = 0.25  # between banner probes, and between logins (limapy: 0.1-0.5 s)
MARKER_POLL = 0.2  # between marker reads once logged in (limapy's host agent: 0.2 s)
# The baseline's banner probes: limapy's policy (lima.drivers.ssh), see ProbePolicy.
BANNER_MAX_IN_FLIGHT = 4
BANNER_LIFETIME = 3.0
BANNER_MAX_LIFETIME = 30.0
# An ssh login's ConnectTimeout (also bounds the banner exchange), doubled after a login
# that timed out: limapy's host agent gives its logins 10 s, doubling up to 60 s.
LOGIN_TIMEOUT = 10.0
MAX_LOGIN_TIMEOUT = 60.0
CONVERGED_RUNS = 10
SSH_READY_MARKER = "/run/lima-ssh-ready"
BOOT_DONE_MARKER = "/run/lima-boot-done"
# One ssh command reads both markers: "<ssh-ready>|<boot-done>" (empty when missing).
# Shell builtins only, as limapy's marker reads (lima.drivers.markers.marker_command): every
# program a poll starts (`cat`, a `$(...)` subshell) costs a TCG guest CPU while it boots.
PROBE_COMMAND = (
    f"r= d=; [ -r {SSH_READY_MARKER} ] && IFS= read -r r < {SSH_READY_MARKER}; "
    f"[ -r {BOOT_DONE_MARKER} ] && IFS= read -r d < {BOOT_DONE_MARKER}; "
    "printf '%s|%s\\n' \"$r\" \"$d\""
)


# --- pure helpers (tests/unit/test_boot_benchmark.py) ---------------------------------------

def parse_progress_line(line: str) -> tuple[str, str, float] | None:
    """`[tiny] ssh_ready        4.8 s` -> ("tiny", "ssh_ready", 4.8); None for other lines."""
    parts = line.strip().split()
    if len(parts) != 4 or parts[3] != "s":
        return None
    if not (parts[0].startswith("[") and parts[0].endswith("]")) or len(parts[0]) < 3:
        return None
    try:
        elapsed = float(parts[2])
    except ValueError:
        return None
    return parts[0][1:-1], parts[1], elapsed


def parse_time(text: str) -> float:
    """An RFC 3339 time (events, JSON logs) -> Unix seconds."""
    return datetime.fromisoformat(text).timestamp()


def event_times(events: Iterable[dict[str, Any]]) -> dict[str, float]:
    """First Unix time of each boot milestone in the host agent's events.

    Keys: "started" (first event), "ssh_ready", "provisioned", "running".
    """
    out: dict[str, float] = {}
    for event in events:
        status = event.get("status")
        if not isinstance(status, dict) or not isinstance(event.get("time"), str):
            continue
        t = parse_time(event["time"])
        out.setdefault("started", t)
        phase = status.get("phase")
        if phase in ("ssh_ready", "provisioned"):
            out.setdefault(phase, t)
        if status.get("running"):
            out.setdefault("running", t)
    return out


def read_jsonl(text: str) -> list[dict[str, Any]]:
    """JSON objects of a JSON-lines text; other lines are skipped."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


@dataclass
class AgentStop:
    """Unix times of the host agent's last shutdown, from its JSON log (None when absent)."""

    signal: float | None = None  # "signal N: shutting the guest down"
    qemu_exited: float | None = None  # "qemu exited with status N"
    exiting: float | None = None  # "host agent exiting (N)"

    @property
    def powerdown(self) -> float | None:
        """Seconds from the agent's signal (then QMP system_powerdown) to qemu's exit."""
        if self.signal is None or self.qemu_exited is None:
            return None
        return self.qemu_exited - self.signal


def agent_stop(log_entries: Sequence[dict[str, Any]]) -> AgentStop:
    """The times of the last stop in the host agent's log entries."""
    out = AgentStop()
    for entry in log_entries:
        msg = str(entry.get("msg", ""))
        when = entry.get("time")
        if not isinstance(when, str):
            continue
        if msg.startswith("signal ") and "shutting the guest down" in msg:
            out = AgentStop(signal=parse_time(when))
        elif msg.startswith("qemu exited") and out.signal is not None:
            out.qemu_exited = parse_time(when)
        elif msg.startswith("host agent exiting") and out.signal is not None:
            out.exiting = parse_time(when)
    return out


def _stat_fields(stat_text: str) -> list[str]:
    """/proc/PID/stat from field 3 (state) on: comm, before it, may hold spaces."""
    return stat_text[stat_text.rindex(")") + 2:].split()


def stat_start_ticks(stat_text: str) -> int:
    """Field 22 (starttime, clock ticks after boot) of /proc/PID/stat."""
    return int(_stat_fields(stat_text)[19])


def stat_cpu_ticks(stat_text: str) -> int:
    """Fields 14 and 15 (utime + stime, clock ticks) of /proc/PID/stat."""
    rest = _stat_fields(stat_text)
    return int(rest[11]) + int(rest[12])


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds the process has used so far (None when it is gone)."""
    if not pid:
        return None
    try:
        return stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def probe_result(stdout: str, iid: str) -> tuple[bool, bool]:
    """(ssh-ready marker holds iid, boot-done marker holds iid) from PROBE_COMMAND's output."""
    ready, _, done = stdout.strip().partition("|")
    return ready.strip() == iid, done.strip() == iid


def normalize_argv(argv: Sequence[str], inst_dir: str, port: int) -> list[str]:
    """qemu argv with the instance directory, ssh port and MAC replaced by placeholders, so
    limapy's and the baseline's command lines can be compared."""
    out = []
    for arg in argv:
        arg = arg.replace(inst_dir.rstrip("/"), "DIR")
        arg = arg.replace(f"127.0.0.1:{port}-", "127.0.0.1:PORT-")
        if arg.startswith("virtio-net-pci,") and ",mac=" in arg:
            head, _, tail = arg.partition(",mac=")
            arg = head + ",mac=MAC" + ("," + tail.split(",", 1)[1] if "," in tail else "")
        out.append(arg)
    return out


def first_seen(times: dict[str, float], phases: Iterable[str]) -> float | None:
    """The earliest time among `phases` present in `times`."""
    found = [times[p] for p in phases if p in times]
    return min(found) if found else None


def median(values: Sequence[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "   -  "
    if unit == "ms":
        return f"{value * 1000:6.0f}ms"
    return f"{value:6.2f}s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


# --- process bookkeeping ---------------------------------------------------------------------

@dataclass
class Home:
    """The private LIMA_HOME and every process started here (stopped by PID at the end)."""

    path: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    keep: Path | None = None  # --keep: each run's logs are copied here
    kept: int = 0

    def save_logs(self, src: Path, tag: str, names: Iterable[str]) -> None:
        """Copy the logs `names` of `src` to keep/NN-tag-NAME (with --keep)."""
        if self.keep is None:
            return
        self.kept += 1
        self.keep.mkdir(parents=True, exist_ok=True)
        for fname in names:
            with contextlib.suppress(OSError):
                shutil.copyfile(src / fname, self.keep / f"{self.kept:02d}-{tag}-{fname}")

    def limactl(self, *args: str) -> list[str]:
        exe = Path(sys.executable).with_name("limactl")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "lima.cli"]
        return [*base, *args]


# Process facts come from the driver's own helpers (zombies count as dead).
_pid_alive = procs.pid_alive
_read_pid = procs.read_pid
_cmdline = procs.cmdline


def _kill_pid(pid: int, must_contain: str) -> None:
    """SIGTERM, then SIGKILL, a PID whose command line mentions `must_contain` (our home)."""
    if not _pid_alive(pid) or not any(must_contain in a for a in _cmdline(pid)):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for _ in range(50):
            if not _pid_alive(pid):
                return
            time.sleep(0.1)


def _process_start_unix(pid: int) -> float | None:
    """When `pid` started, in Unix seconds (10 ms resolution: clock ticks)."""
    try:
        ticks = stat_start_ticks(Path(f"/proc/{pid}/stat").read_text())
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def cleanup(home: Home) -> None:
    """Stop every instance of the benchmark home, kill what is left by PID, delete the home."""
    for proc in home.procs:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    for inst in [p for p in home.path.iterdir() if (p / "lima.yaml").is_file()] \
            if home.path.is_dir() else []:
        if _pid_alive(_read_pid(inst / "ha.pid") or 0) or \
                _pid_alive(_read_pid(inst / "qemu.pid") or 0):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(home.limactl("stop", "-f", inst.name), env=home.env,
                               capture_output=True, timeout=60)
        for pidfile in ("ha.pid", "qemu.pid"):
            pid = _read_pid(inst / pidfile)
            if pid:
                _kill_pid(pid, str(home.path))
    shutil.rmtree(home.path, ignore_errors=True)


# --- limapy --------------------------------------------------------------------------------

@dataclass
class ApplyRun:
    """Seconds after `limactl apply` started (None when not seen)."""

    ok: bool
    error: str = ""
    lines: dict[str, float] = field(default_factory=dict)  # phase -> stderr line arrival
    printed: dict[str, float] = field(default_factory=dict)  # phase -> elapsed apply printed
    events: dict[str, float] = field(default_factory=dict)  # host agent event times
    qemu_start: float | None = None
    agent_start: float | None = None  # the host agent process's start
    exit: float | None = None
    qemu_argv: list[str] = field(default_factory=list)
    ssh_port: int = 0
    stderr: str = ""
    host_cpu: float | None = None  # CPU seconds of `limactl apply` and the host agent
    steal: float | None = None  # the hypervisor's share of the machine's CPU in this run
    qemu_cpu: float | None = None  # qemu's CPU seconds (the guest's work) at the end

    def seen(self, *phases: str) -> float | None:
        """When apply first showed any of `phases` (it skips a line when one pass moves the
        instance through two phases, so a later phase's line counts for an earlier one)."""
        return first_seen(self.lines, phases)

    @property
    def ssh_ready(self) -> float | None:
        return self.seen("ssh_ready", "provisioned", "running", "reported")

    @property
    def running(self) -> float | None:
        return self.seen("running", "reported")


def limapy_apply(home: Home, example: str, name: str,
                 env: dict[str, str] | None = None) -> ApplyRun:
    argv = home.limactl("apply", "--timeout", str(APPLY_TIMEOUT[example] - 30),
                        str(EXAMPLES[example]))
    lines: dict[str, float] = {}
    printed: dict[str, float] = {}
    err_text: list[str] = []
    out_text: list[str] = []
    t0_unix, t0 = time.time(), time.monotonic()
    children_cpu = _children_cpu()
    proc = subprocess.Popen(argv, env={**home.env, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    home.procs.append(proc)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.monotonic() - t0
            err_text.append(line)
            parsed = parse_progress_line(line)
            if parsed is not None and parsed[0] == name:
                lines.setdefault(parsed[1], now)
                printed.setdefault(parsed[1], parsed[2])

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out_text.append(line)
            if line.strip() == f"{name}: running":
                lines.setdefault("reported", time.monotonic() - t0)

    readers = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=read_stdout, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=APPLY_TIMEOUT[example])
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    exit_at = time.monotonic() - t0
    inst = home.path / name
    qemu_cpu = process_cpu(_read_pid(inst / "qemu.pid"))
    agent_cpu = process_cpu(_read_pid(inst / "ha.pid"))
    apply_cpu = _children_cpu() - children_cpu
    for reader in readers:
        reader.join(timeout=5)
    run = ApplyRun(ok=proc.returncode == 0, lines=lines, printed=printed, exit=exit_at,
                   stderr="".join(err_text), qemu_cpu=qemu_cpu,
                   host_cpu=apply_cpu + agent_cpu if agent_cpu is not None else None)
    if not run.ok:
        run.error = (f"limactl apply exited with {proc.returncode}: "
                     + "".join(err_text[-15:]) + "".join(out_text)).strip()
    with contextlib.suppress(OSError):
        events = read_jsonl((inst / "ha.stdout.log").read_text())
        run.events = {k: v - t0_unix for k, v in event_times(events).items()}
        if events:
            run.ssh_port = int(events[0].get("status", {}).get("sshLocalPort") or 0)
    apid = _read_pid(inst / "ha.pid")
    if apid and _pid_alive(apid):
        started = _process_start_unix(apid)
        run.agent_start = started - t0_unix if started is not None else None
    qpid = _read_pid(inst / "qemu.pid")
    if qpid and _pid_alive(qpid):
        started = _process_start_unix(qpid)
        run.qemu_start = started - t0_unix if started is not None else None
        run.qemu_argv = _cmdline(qpid)
    return run


@dataclass
class StopRun:
    """`limactl stop`: wall seconds, and its steps in seconds after the command started."""

    wall: float
    signal: float | None = None  # the host agent got SIGTERM
    qemu_exited: float | None = None
    agent_exit: float | None = None

    @property
    def powerdown(self) -> float | None:
        return _diff(self.qemu_exited, self.signal)


def limapy_stop(home: Home, name: str) -> StopRun:
    t0_unix, t0 = time.time(), time.monotonic()
    res = subprocess.run(home.limactl("stop", name), env=home.env, capture_output=True,
                         text=True, timeout=180)
    run = StopRun(time.monotonic() - t0)
    if res.returncode != 0:
        raise RuntimeError(f"limactl stop {name} failed: {res.stderr.strip()}")
    home.save_logs(home.path / name, "limapy",
                   ("serial.log", "ha.stdout.log", "ha.stderr.log", "qemu.stderr.log"))
    try:
        found = agent_stop(read_jsonl((home.path / name / "ha.stderr.log").read_text()))
    except OSError:
        return run
    run.signal = _diff(found.signal, t0_unix)
    run.qemu_exited = _diff(found.qemu_exited, t0_unix)
    run.agent_exit = _diff(found.exiting, t0_unix)
    return run


def converged_applies(home: Home, example: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        res = subprocess.run(home.limactl("apply", str(EXAMPLES[example])), env=home.env,
                             capture_output=True, text=True, timeout=120)
        times.append(time.monotonic() - t0)
        if res.returncode != 0 or "unchanged" not in res.stdout:
            raise RuntimeError(f"converged apply did not say unchanged: {res.stdout!r} "
                               f"{res.stderr[-500:]!r}")
    return times


# --- baseline: plain qemu + ssh polling ------------------------------------------------------

@dataclass
class BaselineRun:
    ok: bool
    error: str = ""
    banner: float | None = None  # qemu start -> sshd's banner
    login: float | None = None  # qemu start -> ssh login reading this boot's ssh-ready IID
    done: float | None = None  # qemu start -> boot-done marker holds the IID
    powerdown: float | None = None  # QMP system_powerdown -> qemu exit
    argv: list[str] = field(default_factory=list)
    port: int = 0
    probes: list[tuple[float, float, int, str]] = field(default_factory=list)
    banner_probes: list[tuple[float, float, str]] = field(default_factory=list)
    steal: float | None = None  # the hypervisor's share of the machine's CPU in this run
    qemu_cpu: float | None = None  # qemu's CPU seconds (the guest's work) at the end

    def longest_probe(self) -> str:
        """The banner probe that lived longest: (start-end what), e.g. one stalled in slirp."""
        if not self.banner_probes:
            return "-"
        a, b, what = max(self.banner_probes, key=lambda p: p[1] - p[0])
        return f"{a:.1f}-{b:.1f}s {what}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def prepare_baseline(home: Home, name: str, bdir: Path,
                     ) -> tuple[list[str], str, int, ResolverConfig | None]:
    """Lay out `bdir` like the (stopped) instance; return (qemu argv, iid, ssh port, what
    the host agent's DNS server would serve, or None when the guest does not use it).

    Uses limapy's own builders (outside the timed region) so the guest boots exactly the
    same way: qemu_argv, a fresh cidata with a new IID, ssh.config.
    """
    from lima.drivers.accel import detect_accel
    from lima.drivers.cidata import build_cidata
    from lima.drivers.hostagent.dns import ResolverConfig
    from lima.drivers.identity import ensure_identity
    from lima.drivers.qemu import qemu_argv, qemu_binary, uses_host_resolver
    from lima.drivers.sshconfig import write_ssh_config
    from lima.schemas import load_instance
    from lima.states.decide import new_iid

    inst = home.path / name
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir()
    for fname in ("kernel", "initrd", "kernel.cmdline", "basedisk"):
        if (inst / fname).exists():
            (bdir / fname).symlink_to(inst / fname)
    # A throw-away overlay over the stopped instance's disk: same contents, nothing kept.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(inst / "diffdisk"), str(bdir / "diffdisk")], check=True)
    spec = load_instance(name).spec
    identity = ensure_identity()
    iid = new_iid(time.time(), None)
    build_cidata(spec, bdir, iid=iid, identity=identity)
    port = _free_port()
    write_ssh_config(spec, bdir, port=port, identity=identity)
    binary = qemu_binary(spec.arch)
    accel = detect_accel(spec.arch, binary=binary)
    argv = qemu_argv(spec, bdir, ssh_port=port, accel=accel.name, binary=binary)
    if any(a.startswith("vhost-user-fs") for a in argv):
        raise RuntimeError("baseline: virtiofs mounts need a virtiofsd the baseline does not run")
    # As lima.drivers.instance passes it to the host agent (--host-resolver).
    dns = ResolverConfig(instance=spec.name, hosts=dict(spec.host_resolver_hosts),
                         ipv6=spec.host_resolver_ipv6,
                         forward=not spec.qemu.restrict_network) \
        if uses_host_resolver(spec) else None
    return argv, iid, port, dns


def _probe_argv(bdir: Path, name: str, *, timeout: float) -> list[str]:
    """ssh reading both markers through one ControlMaster connection (as ssh.config
    intends): the first successful login opens it, later polls reuse it, so polling does
    not log in again every 0.25 s (full logins keep a TCG guest busy)."""
    return ["ssh", "-F", str(bdir / "ssh.config"), "-o", "ControlMaster=auto",
            "-o", f"ControlPath={bdir / 'ssh.sock'}", "-o", "ControlPersist=30",
            "-o", f"ConnectTimeout={timeout:g}", f"lima-{name}", PROBE_COMMAND]


def close_master(bdir: Path, name: str) -> None:
    """Stop the ControlMaster the probes may have left (ControlPersist)."""
    if (bdir / "ssh.sock").exists():
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["ssh", "-F", str(bdir / "ssh.config"), "-o",
                            f"ControlPath={bdir / 'ssh.sock'}", "-O", "exit", f"lima-{name}"],
                           capture_output=True, timeout=10)


@dataclass
class ProbePolicy:
    """How many banner probes may be in flight and how long each lives: the policy of
    limapy's own prober (lima.drivers.ssh), restated so the baseline waits the same way.

    Up to BANNER_MAX_IN_FLIGHT probes, one started every PROBE_INTERVAL s, each living
    BANNER_LIFETIME s (a probe opened before the guest NIC is up stalls, a newer one
    overtakes it); each probe retired without a banner doubles the lifetime (up to
    BANNER_MAX_LIFETIME). Once the guest closes a probe its NIC is up, and a silent probe
    is sshd forking under TCG: one probe at a time, kept for BANNER_MAX_LIFETIME.
    """

    limit: int = BANNER_MAX_IN_FLIGHT
    lifetime: float = BANNER_LIFETIME

    def retired(self) -> None:
        """A probe lived its lifetime without a banner."""
        self.lifetime = min(2 * self.lifetime, BANNER_MAX_LIFETIME)

    def closed_by_guest(self) -> None:
        """The guest refused or closed a probe: its NIC is up."""
        self.limit, self.lifetime = 1, BANNER_MAX_LIFETIME


def banner_state(data: bytes) -> bool | None:
    """True: an `SSH-` banner; False: something else; None: too short to tell."""
    if len(data) < 4:
        return None if b"SSH-".startswith(data) else False
    return data.startswith(b"SSH-")


def wait_banner(port: int, deadline: float, qemu: subprocess.Popen[bytes],
                log: list[tuple[float, float, str]] | None = None) -> float | None:
    """Monotonic time an `SSH-` banner arrived on 127.0.0.1:`port` (ProbePolicy), or None
    when qemu exits or the deadline passes first. `log` gets (start, end, "banner" |
    "closed" | "refused" | "retired") of each probe (monotonic times).

    A probe refused by the host (qemu not listening yet) does not count as one the guest
    closed. limapy's prober (lima.drivers.ssh) counts both alike; its first probe comes
    after the host agent's own start-up, so it should rarely meet a qemu not listening yet.
    This one probes from qemu's first instant: counted alike, that refusal put the baseline
    in one-at-a-time mode with its next probe stalled in slirp (the NIC not up) until
    BANNER_MAX_LIFETIME retired it, 30 s after qemu started, long after sshd was up.
    """
    log = [] if log is None else log
    policy = ProbePolicy()
    probes: list[tuple[socket.socket, float, bytearray]] = []
    next_start = 0.0
    try:
        while time.monotonic() < deadline and qemu.poll() is None:
            now = time.monotonic()
            for probe in [p for p in probes if now - p[1] >= policy.lifetime]:
                probe[0].close()
                probes.remove(probe)
                log.append((probe[1], now, "retired"))
                policy.retired()
            if now >= next_start and len(probes) < policy.limit:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                # Refused at once: qemu is not listening yet (as limapy, not a probe the
                # guest closed). Once it listens, slirp accepts at once.
                if sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS, errno.EAGAIN):
                    probes.append((sock, now, bytearray()))
                else:
                    sock.close()
                next_start = now + PROBE_INTERVAL
            wake = next_start if len(probes) < policy.limit else probes[0][1] + policy.lifetime
            timeout = max(0.0, min(wake, now + 1.0) - time.monotonic())
            if not probes:
                time.sleep(timeout)
                continue
            ready, _, _ = select.select([p[0] for p in probes], [], [], timeout)
            for probe in [p for p in probes if p[0] in ready]:
                try:
                    chunk = probe[0].recv(64)
                except BlockingIOError:
                    continue
                except ConnectionRefusedError:
                    # qemu is not listening yet (the first probe, made as qemu starts):
                    # not a probe the guest closed, so the NIC may well not be up.
                    probe[0].close()
                    probes.remove(probe)
                    log.append((probe[1], time.monotonic(), "refused"))
                    continue
                except OSError:
                    chunk = b""
                probe[2].extend(chunk)
                state = banner_state(bytes(probe[2])) if chunk else False
                if state:
                    log.append((probe[1], time.monotonic(), "banner"))
                    return time.monotonic()
                if state is False:
                    probe[0].close()
                    probes.remove(probe)
                    log.append((probe[1], time.monotonic(), "closed"))
                    policy.closed_by_guest()
    finally:
        for probe in probes:
            probe[0].close()
    return None


def poll_ssh(bdir: Path, name: str, iid: str, t0: float, deadline: float,
             qemu: subprocess.Popen[bytes], run: BaselineRun) -> None:
    """Wait for sshd's banner (wait_banner), then log in with the system ssh, one attempt at
    a time, until a login reads this boot's IID in the ssh-ready marker (run.login), then
    poll every MARKER_POLL s through the shared connection until boot-done holds it
    (run.done): limapy's host agent also probes the banner, then logs in (retrying soon
    while the key is not installed yet), then polls. Seconds after t0; run.probes gets
    (start, end, exit status, stdout) of every ssh."""
    log: list[tuple[float, float, str]] = []
    banner = wait_banner(run.port, deadline, qemu, log)
    run.banner_probes = [(a - t0, b - t0, what) for a, b, what in log]
    if banner is None:
        return
    run.banner = banner - t0
    timeout = LOGIN_TIMEOUT
    while run.done is None and time.monotonic() < deadline and qemu.poll() is None:
        started = time.monotonic()
        proc = subprocess.Popen(_probe_argv(bdir, name, timeout=timeout),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True)
        try:
            out, _ = proc.communicate(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0] or ""
            timeout = min(2 * timeout, MAX_LOGIN_TIMEOUT)  # a slow guest: give it longer
        now = time.monotonic()
        run.probes.append((started - t0, now - t0, proc.returncode, out.strip()))
        if proc.returncode == 0:
            ready, booted = probe_result(out, iid)
            if ready and run.login is None:
                run.login = now - t0
            if booted:
                run.done = now - t0
        pause = MARKER_POLL if proc.returncode == 0 else PROBE_INTERVAL
        time.sleep(max(0.0, started + pause - time.monotonic()))


def qmp_powerdown(sock_path: Path, qemu: subprocess.Popen[bytes], timeout: float) -> float | None:
    """QMP system_powerdown, then wait for qemu to exit; seconds, or None (then killed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        f = s.makefile("rwb")
        f.readline()  # greeting
        t0 = time.monotonic()
        for cmd in ("qmp_capabilities", "system_powerdown"):
            t0 = time.monotonic()
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while b'"return"' not in (line := f.readline()):
                if not line or b'"error"' in line:
                    raise RuntimeError(f"QMP {cmd}: {line!r}")
    try:
        qemu.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
        return None
    return time.monotonic() - t0


def baseline_boot(home: Home, example: str, name: str) -> BaselineRun:
    bdir = home.path / "bl"
    argv, iid, port, resolver = prepare_baseline(home, name, bdir)
    run = BaselineRun(ok=False, argv=argv, port=port)
    # The argv's char-dns chardev connects to dns.sock: serve it as the host agent does
    # (without a listener there, qemu 7.2 runs but the guest never reaches its kernel).
    dns = None
    if resolver is not None:
        from lima.drivers.hostagent.dns import start_server
        dns = start_server(bdir, resolver)
    out = open(bdir / "qemu.stdout.log", "wb")  # noqa: SIM115
    err = open(bdir / "qemu.stderr.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    qemu = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            cwd=bdir, start_new_session=True)
    home.procs.append(qemu)
    out.close()
    err.close()
    try:
        poll_ssh(bdir, name, iid, t0, t0 + APPLY_TIMEOUT[example] - 30, qemu, run)
        run.qemu_cpu = process_cpu(qemu.pid)
        if qemu.poll() is not None:
            run.error = f"qemu exited with {qemu.returncode}: " + \
                (bdir / "qemu.stderr.log").read_text(errors="replace")[-500:]
        elif run.done is None:
            run.error = (f"boot-done marker not seen before the deadline (banner "
                         f"{fmt(run.banner)}, login {fmt(run.login)}); qemu stderr: "
                         + (bdir / "qemu.stderr.log").read_text(errors="replace")[-300:]
                         + " serial: " + _tail(bdir / "serial.log"))
        else:
            run.ok = True
            close_master(bdir, name)  # as limapy closes its ssh session before stopping
            run.powerdown = qmp_powerdown(bdir / "qmp.sock", qemu, 60)
    finally:
        close_master(bdir, name)
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        if dns is not None:
            dns.stop()
        home.save_logs(bdir, "baseline", ("serial.log", "qemu.stderr.log"))
        shutil.rmtree(bdir, ignore_errors=True)
    return run


def cpu_ticks(text: str | None = None) -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat's `cpu` line."""
    if text is None:
        try:
            text = Path("/proc/stat").read_text()
        except OSError:
            return 0, 0
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: in user]
            return (values[7] if len(values) > 7 else 0), sum(values[:8])
    return 0, 0


class StealMeter:
    """The share of this machine's CPU time its hypervisor took (steal) during a run: on a
    shared host the same boot's time moves with it, so each run line shows it."""

    def __init__(self) -> None:
        self.start = cpu_ticks()

    def share(self) -> float | None:
        steal, total = cpu_ticks()
        d_total = total - self.start[1]
        return (steal - self.start[0]) / d_total if d_total > 0 else None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu(run: ApplyRun | BaselineRun) -> str:
    text = f"qemu cpu {fmt(run.qemu_cpu)}"
    if isinstance(run, ApplyRun):
        text += f" + limapy {fmt(run.host_cpu)}"
    return text


def _steal(value: float | None) -> str:
    return "steal ?" if value is None else f"steal {value * 100:3.0f}%"


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-300:]
    except OSError:
        return "(none)"


# --- the report ----------------------------------------------------------------------------

def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _limapy_line(tag: str, r: ApplyRun) -> str:
    if not r.ok:
        return f"  {tag:<12} FAILED: {r.error.splitlines()[0] if r.error else '?'}"
    return (f"  {tag:<12} qemu start {fmt(r.qemu_start)}  ssh_ready {fmt(r.ssh_ready)}"
            f" (event {fmt(r.events.get('ssh_ready'))})  running {fmt(r.running)}"
            f" (event {fmt(r.events.get('running'))})  exit {fmt(r.exit)}")


def _baseline_line(tag: str, r: BaselineRun) -> str:
    if not r.ok:
        return f"  {tag:<12} FAILED: {r.error}"
    return (f"  {tag:<12} qemu start   0.00s  login     {fmt(r.login)}"
            f" (banner {fmt(r.banner)} after {len(r.banner_probes)} probes, longest "
            f"{r.longest_probe()}; {len(r.probes)} ssh)  boot-done {fmt(r.done)}"
            f"                  powerdown {fmt(r.powerdown)}")


def bench_example(home: Home, example: str, runs: int, cold_pairs: int = 0) -> None:
    name = example  # the examples are named after their file
    _say(f"== {example}: {EXAMPLES[example].relative_to(REPO)}, {runs} runs "
         f"(times in seconds after `limactl apply` / qemu start) ==")
    cold = limapy_apply(home, example, name)
    _say(_limapy_line("cold+create", cold))
    if not cold.ok:
        _say(cold.error)
        return
    _say(f"  (create: {fmt(cold.lines.get('created'))}, "
         f"cidata_built {fmt(cold.lines.get('cidata_built'))})")
    conv = converged_applies(home, example, CONVERGED_RUNS)
    stops = [limapy_stop(home, name)]

    lp: list[ApplyRun] = []
    bl: list[BaselineRun] = []
    for i in range(runs):
        order = ("limapy", "baseline") if i % 2 == 0 else ("baseline", "limapy")
        for which in order:
            meter = StealMeter()
            if which == "limapy":
                r = limapy_apply(home, example, name)
                r.steal = meter.share()
                lp.append(r)
                _say(f"{_limapy_line(f'limapy #{i + 1}', r)}  {_steal(r.steal)}  {_cpu(r)}")
                if not r.ok:
                    _say(r.error)
                    return
                if i == 0:
                    _compare_argv(home, name, r)
                stops.append(limapy_stop(home, name))
            else:
                b = baseline_boot(home, example, name)
                b.steal = meter.share()
                bl.append(b)
                _say(f"{_baseline_line(f'baseline #{i + 1}', b)}  {_steal(b.steal)}  {_cpu(b)}")
                if not b.ok:
                    return
    _summary(example, lp, bl, conv, stops)
    if cold_pairs:
        _cold_pairs(home, example, name, cold_pairs, median([b.done for b in bl]))


def _cold_pairs(home: Home, example: str, name: str, n: int,
                baseline_done: float | None) -> None:
    """`n` pairs of cold applies of a new instance (create included), interleaved: its
    first boot loading the boot template the cold run saved, and one without templates."""
    subprocess.run(home.limactl("delete", "-f", name), env=home.env, capture_output=True,
                   timeout=300, check=False)
    got: dict[str, list[ApplyRun]] = {"template": [], "no template": []}
    for i in range(n):
        order = ("template", "no template") if i % 2 == 0 else ("no template", "template")
        for which in order:
            meter = StealMeter()
            env = {boottemplate.ENV_SWITCH: "0"} if which == "no template" else {}
            r = limapy_apply(home, example, name, env=env)
            r.steal = meter.share()
            got[which].append(r)
            try:
                log = (home.path / name / "ha.stderr.log").read_text(errors="replace")
            except OSError:
                log = ""
            used = "loaded" if "loaded from the boot template" in log else "booted"
            _say(f"{_limapy_line(f'cold, {which} #{i + 1}', r)}  {_steal(r.steal)}  "
                 f"{_cpu(r)}  ({used})")
            subprocess.run(home.limactl("delete", "-f", name), env=home.env,
                           capture_output=True, timeout=300, check=False)
            if not r.ok:
                _say(r.error)
                return
    t = median([r.running for r in got["template"]])
    o = median([r.running for r in got["no template"]])
    pairs = [a.running / b.running for a, b in zip(got["template"], got["no template"],
                                                    strict=False)
             if a.running is not None and b.running]
    _say(f"-- {example}: cold apply (create included) -> running, medians over {n} pairs --")
    _say(f"  boot template {fmt(t)}   no template {fmt(o)}   ratio {ratio(t, o)} "
         f"(pairs' own: {ratio(median(pairs), 1.0)})   target <= 25 s")
    _say(f"  against the baseline's warm boot-done median {fmt(baseline_done)}: "
         f"{ratio(t, baseline_done)} with the template, {ratio(o, baseline_done)} without")


_COMPARED: dict[str, list[str]] = {}


def _compare_argv(home: Home, name: str, r: ApplyRun) -> None:
    """Check once that the baseline boots the very command line limapy ran."""
    if not r.qemu_argv:
        return
    from lima.drivers.accel import detect_accel
    from lima.drivers.qemu import qemu_argv, qemu_binary
    from lima.schemas import load_instance

    spec = load_instance(name).spec
    binary = qemu_binary(spec.arch)
    accel = detect_accel(spec.arch, binary=binary)
    port = r.ssh_port or 22
    ours = qemu_argv(spec, home.path / name, ssh_port=port, accel=accel.name, binary=binary)
    a = normalize_argv(r.qemu_argv, str(home.path / name), port)
    b = normalize_argv(ours, str(home.path / name), port)
    # The running qemu shows its binary's resolved name; compare from the first option.
    same = a[1:] == b[1:]
    _say(f"  qemu argv of limapy's qemu {'==' if same else '!='} qemu_argv() rebuilt for "
         "the baseline (paths, port, MAC aside)")
    if not same:
        _say(f"    limapy:   {' '.join(a)}\n    rebuilt:  {' '.join(b)}")


def _summary(example: str, lp: list[ApplyRun], bl: list[BaselineRun], conv: list[float],
             stops: list[StopRun]) -> None:
    m = {"ssh_ready": median([r.ssh_ready for r in lp]),
         "running": median([r.running for r in lp])}
    ev = {k: median([r.events.get(k) for r in lp]) for k in
          ("started", "ssh_ready", "provisioned", "running")}
    q = median([r.qemu_start for r in lp])
    ex = median([r.exit for r in lp])
    b_banner = median([b.banner for b in bl])
    b_login = median([b.login for b in bl])
    b_done = median([b.done for b in bl])
    b_pd = median([b.powerdown for b in bl])
    _say(f"-- {example}: medians over {len(lp)} warm runs --")
    _say(f"  limapy   apply -> ssh_ready {fmt(m['ssh_ready'])}   apply -> running "
         f"{fmt(m['running'])}   (apply exits {fmt(ex)})")
    _say(f"  baseline qemu  -> login     {fmt(b_login)}   qemu  -> boot-done "
         f"{fmt(b_done)}   (qemu -> sshd banner {fmt(b_banner)})")
    _say(f"  ratio limapy/baseline: ssh_ready {ratio(m['ssh_ready'], b_login)}, "
         f"running {ratio(m['running'], b_done)}   (target <= 1.05)")
    pairs = [r.running / b.done for r, b in zip(lp, bl, strict=False)
             if r.running is not None and b.done is not None and b.done > 0]
    _say(f"  median of the {len(pairs)} runs' own ratios (run #i of each, back to back): "
         f"running {ratio(median(pairs), 1.0)}; steal medians: limapy "
         f"{_steal(median([r.steal for r in lp]))}, baseline "
         f"{_steal(median([b.steal for b in bl]))}")
    q_ssh = median([_diff(r.events.get("ssh_ready"), r.qemu_start) for r in lp])
    q_run = median([_diff(r.events.get("running"), r.qemu_start) for r in lp])
    q_prov = median([_diff(r.events.get("provisioned"), r.qemu_start) for r in lp])
    _say(f"  CPU to the end of the run (median): qemu (the guest's work) limapy "
         f"{fmt(median([r.qemu_cpu for r in lp]))}, baseline "
         f"{fmt(median([b.qemu_cpu for b in bl]))}; limactl apply + host agent "
         f"{fmt(median([r.host_cpu for r in lp]))}")
    _say("  limapy breakdown (from ha.stdout.log event times and qemu's /proc start time):")
    _say(f"    apply start -> host agent process starts "
         f"{fmt(median([r.agent_start for r in lp]))}, -> its first event {fmt(ev['started'])}"
         f", -> qemu starts {fmt(q)}")
    _say(f"    qemu start -> ssh_ready event {fmt(q_ssh)} (baseline login {fmt(b_login)}), "
         f"-> provisioned event {fmt(q_prov)} (baseline boot-done {fmt(b_done)}), "
         f"-> running event {fmt(q_run)} (after mounts, if any)")
    lag_ssh = median([_diff(r.ssh_ready, r.events.get("ssh_ready")) for r in lp])
    lag_run = median([_diff(r.running, r.events.get("running")) for r in lp])
    tail = median([_diff(r.exit, r.running) for r in lp])
    _say(f"    event -> apply's stderr line: ssh_ready {fmt(lag_ssh)}, running {fmt(lag_run)}; "
         f"running line -> apply exit {fmt(tail)}")
    _say(f"  converged apply (x{len(conv)}): median {fmt(statistics.median(conv), 'ms')}, "
         f"min {fmt(min(conv), 'ms')}, max {fmt(max(conv), 'ms')}   (target <= 300ms)")
    _say(f"  limactl stop: median {fmt(median([s.wall for s in stops]))} (x{len(stops)}); "
         f"QMP system_powerdown -> qemu exit: baseline {fmt(b_pd)}, "
         f"host agent {fmt(median([s.powerdown for s in stops]))}")
    _say(f"    stop steps (median, after `limactl stop` started): agent gets SIGTERM "
         f"{fmt(median([s.signal for s in stops]))}, qemu exited "
         f"{fmt(median([s.qemu_exited for s in stops]))}, agent exits "
         f"{fmt(median([s.agent_exit for s in stops]))}, limactl exits "
         f"{fmt(median([s.wall for s in stops]))}")


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


@contextlib.contextmanager
def bench_home(*, pycache: bool = False) -> Iterator[Home]:
    """A fresh LIMA_HOME under /tmp, cleaned up at the end (even on errors or SIGTERM).

    `pycache`: let the limactl and host agent processes cache bytecode (in the home, not
    in the source tree) even when PYTHONDONTWRITEBYTECODE is set, as an installed
    limapy has .pyc files; the cold run fills the cache.
    """
    path = Path(tempfile.mkdtemp(prefix="lbk", dir="/tmp"))
    env = dict(os.environ, LIMA_HOME=str(path))
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(path / "_pycache")
    os.environ["LIMA_HOME"] = str(path)  # for the lima builders used by the baseline
    # Boot templates of this run only: the cold run saves the one the cold pairs load.
    env[boottemplate.ENV_DIR] = str(path / "_boot")
    home = Home(path, env)

    def on_term(signum: int, _frame: Any) -> None:
        print(f"signal {signum}: cleaning up {path}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield home
    finally:
        cleanup(home)
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", choices=sorted(EXAMPLES), default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", type=int, default=2, metavar="N",
                    help="cold pairs: a new instance's first boot loading the boot template, "
                         "and one with LIMA_BOOT_TEMPLATES=0")
    ap.add_argument("--pycache", action="store_true",
                    help="cache bytecode for limactl (under the benchmark home) even when "
                         "PYTHONDONTWRITEBYTECODE is set")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="copy each run's serial log (and host agent logs) to DIR")
    args = ap.parse_args(argv)
    # The baseline's builders would repeat the "using TCG" warning the host agent logs.
    logging.getLogger("lima").setLevel(logging.ERROR)
    examples = [args.only] if args.only else ["tiny", "default"]
    _say(f"limapy boot benchmark: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
         f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    for example in examples:
        try:
            with bench_home(pycache=args.pycache) as home:
                bytecode = "cached" if "PYTHONPYCACHEPREFIX" in home.env else (
                    "not cached" if home.env.get("PYTHONDONTWRITEBYTECODE") else "default")
                _say(f"LIMA_HOME={home.path}  limactl bytecode: {bytecode}")
                home.keep = args.keep / example if args.keep else None
                bench_example(home, example, args.runs, args.cold)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _say(f"  {example}: FAILED: {exc}")
        except Exception as exc:  # keep going with the next example, but show what broke
            _say(f"  {example}: FAILED ({type(exc).__name__}): {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
