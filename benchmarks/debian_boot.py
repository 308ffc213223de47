"""Debian guest boot figures (issue 9, issue 11): booting -> ssh_ready -> Running, the guest
agent's first report, and what the agent costs in an idle guest.

Each run creates a fresh instance from examples/default.yaml (template:debian-12-local,
the image build:debian-12; a cold create is what the test suite does about 7 times) in a
private LIMA_HOME under /tmp, with `limactl apply`, and reads the host agent's event log
(ha.stdout.log): booting is its first event (qemu starts right after), then the
`phase: ssh_ready` event, the `running: true` event and the first `portForward` event (the
first guest agent report the host agent applied). Inside the guest it reads
`systemd-analyze`, and the guest agent's own journal line "first report ... N s after
start" (start of the agent process -> its first report written to the virtio port), and
when its unit started relative to boot; and the host CPU time qemu used until `limactl
apply` returned (the guest's work, which host load does not inflate as much as the wall
clock). After the last run, in the idle guest: the
agent's RSS and CPU (`ps`, /proc/PID/stat over --idle seconds) and qemu's host CPU.

Usage (the Debian guest is CPU-heavy under TCG; one at a time across the team):
  flock /tmp/limapy-debian.lock .venv/bin/python benchmarks/debian_boot.py [--runs 3]
Set XDG_CACHE_HOME to use another image cache. Guests use restrict=on networking; every
instance is deleted at the end (also on errors), and so is the LIMA_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "default.yaml"
NAME = "default"
APPLY_TIMEOUT = 900


@dataclass
class Run:
    ok: bool = False
    error: str = ""
    ssh_ready: float | None = None  # seconds after booting
    running: float | None = None
    first_report: float | None = None
    agent_first: float | None = None  # agent process start -> first report (its journal)
    agent_unit: float | None = None  # guest uptime when the agent's unit started
    qemu_cpu: float | None = None  # host CPU seconds qemu used until apply returned
    analyze: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def limactl(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LIMA_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "lima.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def guest(home: Path, script: str) -> str:
    res = limactl(home, "shell", "--workdir", "/", NAME, "sudo", "sh", "-c", script)
    return res.stdout.strip()


def event_times(log: str) -> dict[str, float]:
    """Unix times of the first event of each kind in ha.stdout.log."""
    out: dict[str, float] = {}
    for line in log.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        when = datetime.fromisoformat(ev["time"]).timestamp()
        st = ev.get("status", {})
        out.setdefault("booting", when)
        if st.get("phase") == "ssh_ready":
            out.setdefault("ssh_ready", when)
        if st.get("running"):
            out.setdefault("running", when)
        if "portForward" in st:
            out.setdefault("first_report", when)
    return out


def one_run(home: Path) -> Run:
    run = Run()
    res = limactl(home, "apply", "--timeout", str(APPLY_TIMEOUT - 30), str(EXAMPLE),
                  timeout=APPLY_TIMEOUT)
    log_path = home / NAME / "ha.stdout.log"
    times = event_times(log_path.read_text()) if log_path.exists() else {}
    if res.returncode != 0:
        run.error = (res.stderr + res.stdout).strip()[-800:]
        return run
    qpid_path = home / NAME / "qemu.pid"
    if qpid_path.exists():
        run.qemu_cpu = _cpu_seconds(int(qpid_path.read_text().strip()))
    t0 = times.get("booting")
    for key in ("ssh_ready", "running", "first_report"):
        if t0 is not None and key in times:
            setattr(run, key, times[key] - t0)
    run.analyze = guest(home, "systemd-analyze | head -1")
    # Where the guest's time went: the units on the way to ssh and provisioning, and
    # cloud-init's own stage times (which exclude its start-up).
    run.extra["units"] = " ".join(guest(home, (
        "systemd-analyze blame --no-pager | grep -E 'cloud-|wait-online|ssh.service'"
        " | awk '{u=$NF; $NF=\"\"; printf \"%s=%s \", u, $0}'")).split())
    run.extra["stages"] = " ".join(
        line.replace("Finished stage: ", "").replace(" seconds", "s")
        for line in guest(home, "cloud-init analyze show | grep 'Finished stage'").splitlines())
    journal = guest(home, "journalctl -b -o short-monotonic --no-pager -u lima-guestagent")
    for line in journal.splitlines():
        if "first report" in line and " after start" in line:
            run.agent_first = float(line.rsplit(" s after start", 1)[0].rsplit(" ", 1)[1])
        elif "Started lima-guestagent" in line and run.agent_unit is None:
            run.agent_unit = float(line.split("]", 1)[0].strip("[ "))
    run.ok = True
    return run


def idle_cost(home: Path, seconds: float) -> str:
    """The guest agent's RSS and CPU, and qemu's host CPU, over `seconds` of idle guest."""
    script = (
        "p=$(systemctl show -p MainPID --value lima-guestagent); "
        "a=$(cut -d' ' -f14,15 /proc/$p/stat | tr ' ' +); "
        f"sleep {seconds:g}; "
        "b=$(cut -d' ' -f14,15 /proc/$p/stat | tr ' ' +); "
        'echo "$(ps -o rss= -p $p) $(( ($b) - ($a) )) $(getconf CLK_TCK)"'
    )
    qpid = int((home / NAME / "qemu.pid").read_text().strip())
    q0 = _cpu_seconds(qpid)
    w0 = time.monotonic()
    fields = guest(home, script).split()
    q1, w1 = _cpu_seconds(qpid), time.monotonic()
    if len(fields) != 3:
        return f"idle guest: agent not found ({' '.join(fields)!r})"
    rss, ticks, hz = (int(f) for f in fields)
    return (f"idle guest over {seconds:g} s: agent RSS {rss / 1024:.1f} MiB, agent CPU "
            f"{100 * ticks / hz / seconds:.1f}% of a vCPU; qemu (whole guest) "
            f"{100 * (q1 - q0) / (w1 - w0):.1f}% of a host CPU")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(v: float | None) -> str:
    return f"{v:6.1f}s" if v is not None else "     - "


def med(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=30.0,
                    help="seconds to sample the idle guest after the last run (0: skip)")
    args = ap.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ldb", dir="/tmp"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    print(f"Debian boot benchmark: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}, LIMA_HOME={home}", flush=True)
    runs: list[Run] = []
    try:
        for i in range(args.runs):
            run = one_run(home)
            runs.append(run)
            if not run.ok:
                print(f"  run {i + 1}: FAILED: {run.error}", flush=True)
                break
            print(f"  run {i + 1}: booting -> ssh_ready {fmt(run.ssh_ready)}  -> Running "
                  f"{fmt(run.running)}  -> first agent report {fmt(run.first_report)}  "
                  f"(agent unit started at uptime {fmt(run.agent_unit)}, its first report "
                  f"{fmt(run.agent_first)} after its start; qemu CPU to Running "
                  f"{fmt(run.qemu_cpu)}; load "
                  f"{os.getloadavg()[0]:.2f})\n      guest: {run.analyze}\n      units: "
                  f"{run.extra.get('units', '')}\n      cloud-init stages: "
                  f"{run.extra.get('stages', '')}", flush=True)
            if i + 1 < args.runs:
                limactl(home, "delete", "-f", NAME, timeout=180)
            elif args.idle > 0:
                print("  " + idle_cost(home, args.idle), flush=True)
    finally:
        limactl(home, "delete", "-f", NAME, timeout=180)
        shutil.rmtree(home, ignore_errors=True)
    ok = [r for r in runs if r.ok]
    if ok:
        print(f"-- median of {len(ok)} runs: booting -> ssh_ready "
              f"{fmt(med([r.ssh_ready for r in ok]))}, -> Running "
              f"{fmt(med([r.running for r in ok]))}, -> first agent report "
              f"{fmt(med([r.first_report for r in ok]))}; agent start -> first report "
              f"{fmt(med([r.agent_first for r in ok]))}; qemu CPU to Running "
              f"{fmt(med([r.qemu_cpu for r in ok]))}")
    return 0 if ok and len(ok) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
