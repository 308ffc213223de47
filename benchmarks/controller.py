"""Figures of the folder controller (issue 8), printed, not asserted.

With the fake driver (lima.controller.fake) on a fake clock, in this process, with the real
watchdog observer and work queue:
  - save -> first action: a lima.yaml written into DIR to the driver's first lifecycle
    action for it (target <= 300 ms; the settle delay is 100 ms of it);
  - resync of N instance files (default 200), all converged (target <= 1 s);
  - RSS of the process with N managed instances (target <= 100 MB);
  - idle: CPU seconds and voluntary context switches (wake-ups) per minute, measured over
    --idle seconds with no events (target ~0: no busy polling).
With --qemu, also on the tiny guest with a real `limactl controller`: qemu killed -9 under
the running controller to the instance Running again. With --restart, on the tiny guest: a
restart-class edit (cpus 1 -> 2, saved as editors do: temp file + rename) to the instance
Ready again with a new boot, against a `limactl stop` + `limactl start` by hand (paused),
(target: <= 1.2x the stop + start).

Usage: PYTHONPATH=. .venv/bin/python benchmarks/controller.py [--instances 200] [--idle 20]
       [--qemu] [--restart] [--no-fake]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TINY = "base: template:tiny\n"


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def fake_figures(n: int, idle: float) -> None:
    from lima.controller.clock import FakeClock
    from lima.controller.fake import FakeDriver
    from lima.controller.folder import DecisionLog, FolderController, Options, wait_for
    from lima.states.actions import Action, Outcome
    from lima.states.model import DesiredState

    home = Path(tempfile.mkdtemp(prefix="lhb-", dir="/tmp"))
    os.environ["LIMA_HOME"] = str(home)
    folder = Path(tempfile.mkdtemp(prefix="vms-", dir="/tmp")).resolve()
    clock = FakeClock()
    first_action: dict[str, float] = {}

    class Timed(FakeDriver):
        def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
            first_action.setdefault(name, time.perf_counter())
            return super().execute(name, action, desired)

    fake = Timed(clock)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the benchmark
    ctl = FolderController(Options(folder, workers=4, resync=3600, settle=0.1),
                           driver=lambda name: fake, clock=clock,
                           decisions=DecisionLog(devnull))
    ctl.start()
    try:
        # 1. save -> first action, 10 samples.
        samples = []
        for i in range(10):
            name = f"save{i}"
            t0 = time.perf_counter()
            (folder / f"{name}.yaml").write_text(TINY)
            assert wait_for(lambda name=name: name in first_action, 5), name
            samples.append((first_action[name] - t0) * 1000)
        print(f"save -> first action: median {statistics.median(samples):.0f} ms, "
              f"max {max(samples):.0f} ms (target <= 300 ms)")
        # 2. N files, converged; then a full resync timed.
        for i in range(n):
            (folder / f"vm{i:03d}.yaml").write_text(TINY)
        assert wait_for(lambda: all(fake.vm(f"vm{i:03d}").qemu_alive for i in range(n)), 120)
        assert ctl.queue.drain(60)
        before = ctl.queue.passes
        t0 = time.perf_counter()
        ctl.resync()
        assert ctl.queue.drain(60)
        took = time.perf_counter() - t0
        print(f"resync of {ctl.queue.passes - before} instances: {took * 1000:.0f} ms "
              "(target <= 1 s)")
        print(f"RSS with {n + 10} instances: {_proc_status('VmRSS') / 1024:.1f} MB "
              "(target <= 100 MB)")
        # 3. idle.
        cpu0, sw0 = sum(os.times()[:2]), _proc_status("voluntary_ctxt_switches")
        time.sleep(idle)
        cpu1, sw1 = sum(os.times()[:2]), _proc_status("voluntary_ctxt_switches")
        per_min = 60.0 / idle
        print(f"idle over {idle:.0f} s: CPU {(cpu1 - cpu0) * per_min:.3f} s/min, "
              f"{(sw1 - sw0) * per_min:.0f} wake-ups/min (main thread included; "
              "no resync in the window)")
    finally:
        ctl.stop(10)


def qemu_figure() -> None:
    """qemu killed -9 under a running controller -> Running again (tiny guest)."""
    home = Path(tempfile.mkdtemp(prefix="lhq-", dir="/tmp"))
    folder = Path(tempfile.mkdtemp(prefix="vmq-", dir="/tmp"))
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    log = open(folder.parent / f"{folder.name}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "lima.cli"]
    ctl = subprocess.Popen([*cmd, "controller", "--resync=30", str(folder)], env=env,
                           stdout=log, stderr=log, start_new_session=True)

    def status() -> str:
        p = subprocess.run([*cmd, "list", "--json", "tiny"], env=env, capture_output=True,
                           text=True)
        return json.loads(p.stdout.splitlines()[0])["status"] if p.stdout.strip() else ""

    def until(pred: object, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():  # type: ignore[operator]
                return time.monotonic() - t0
            time.sleep(0.2)
        raise SystemExit("timed out")

    try:
        (folder / "tiny.yaml").write_text((ROOT / "examples" / "tiny.yaml").read_text())
        print(f"tiny: file dropped -> Running {until(lambda: status() == 'Running', 300):.1f} s")
        pid = int((home / "tiny" / "qemu.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        until(lambda: status() != "Running", 30)
        took = until(lambda: status() == "Running", 300)
        print(f"tiny: qemu killed -9 -> Running again {took:.1f} s (crash backoff included)")
    finally:
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(60)
        # Still managed by the (stopped) controller: `delete` wants it paused first.
        subprocess.run([*cmd, "controller", "pause", "tiny"], env=env, capture_output=True)
        subprocess.run([*cmd, "delete", "-f", "tiny"], env=env, capture_output=True)


def restart_figure() -> None:
    """A restart-class edit under a running controller -> Ready again, vs stop + start."""
    home = Path(tempfile.mkdtemp(prefix="lhr-", dir="/tmp"))
    folder = Path(tempfile.mkdtemp(prefix="vmr-", dir="/tmp"))
    env = {**os.environ, "LIMA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    log = open(folder.parent / f"{folder.name}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "lima.cli"]
    text = (ROOT / "examples" / "tiny.yaml").read_text()
    ctl = subprocess.Popen([*cmd, "controller", "--resync=30", str(folder)], env=env,
                           stdout=log, stderr=log, start_new_session=True)

    def status() -> dict[str, object]:
        try:
            doc = json.loads((home / "tiny" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def ready_with_new_boot(old_iid: object) -> bool:
        st = status()
        return st.get("iid") not in (None, old_iid) and st.get("phase") == "running" and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in st.get("conditions") or [] if isinstance(c, dict))

    def until(pred: object, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():  # type: ignore[operator]
                return time.monotonic() - t0
            time.sleep(0.05)
        raise SystemExit("timed out")

    def run(*args: str) -> None:
        subprocess.run([*cmd, *args], env=env, capture_output=True, check=True)

    try:
        (folder / "tiny.yaml").write_text(text)
        print(f"tiny: file dropped -> Ready {until(lambda: ready_with_new_boot(None), 300):.1f} s")
        iid = status().get("iid")
        tmp = folder / ".tiny.yaml.swp"
        tmp.write_text(text + "cpus: 2\n")
        t0 = time.monotonic()
        os.rename(tmp, folder / "tiny.yaml")
        until(lambda: ready_with_new_boot(iid), 300)
        edit = time.monotonic() - t0
        print(f"tiny: cpus 1 -> 2 saved -> Ready again (one restart): {edit:.1f} s")
        run("controller", "pause", "tiny")
        t0 = time.monotonic()
        run("stop", "tiny")
        run("start", "tiny")
        by_hand = time.monotonic() - t0
        print(f"tiny: limactl stop + limactl start by hand: {by_hand:.1f} s")
        print(f"ratio: {edit / by_hand:.2f}x (target <= 1.2x)")
    finally:
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(60)
        subprocess.run([*cmd, "controller", "pause", "tiny"], env=env, capture_output=True)
        subprocess.run([*cmd, "delete", "-f", "tiny"], env=env, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--qemu", action="store_true")
    ap.add_argument("--restart", action="store_true")
    ap.add_argument("--no-fake", action="store_true", help="Skip the fake-driver figures.")
    args = ap.parse_args()
    if not args.no_fake:
        fake_figures(args.instances, args.idle)
    if args.qemu:
        qemu_figure()
    if args.restart:
        restart_figure()


if __name__ == "__main__":
    main()
