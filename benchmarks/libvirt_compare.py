"""limapy against libvirt on the same Debian image (issue 11): boot, warm start and stop.

What a Linux user would pick instead of limapy is libvirt (`virt-install --import`). Both
sides boot the image `build:debian-12` from limapy's image cache, with the same kernel,
initrd and command line (direct kernel boot), the same network-config, 2 vCPUs, 2 GiB,
TCG, and QEMU user networking with restrict=on and the ssh forward on 127.0.0.1 only.
libvirt gets limapy's user-data without its boot scripts (cloud-config.yaml: the same
user and ssh key) on a NoCloud seed attached on virtio-scsi (virt-install's own
`--cloud-init` seed is a SATA CD-ROM, which the image's kernel cannot read), a qcow2
overlay per run, and a fixed instance-id, as a user would have. limapy waits for full
readiness (boot scripts, provisioning); libvirt waits for nothing.

Runs are interleaved (limapy, libvirt, limapy, ...). Each run measures, from the command
that starts the guest, cold (a new instance or domain) and warm (stop, then start the same
one): when sshd first answers, the first ssh login and cloud-init done (its result.json;
`cloud-init status` confirms it afterwards), all three by the same poller
(benchmarks/bootwatch.py, whose docstring has the details) with the same options on both
sides; and the stop. For limapy also the return of `limactl apply` / `limactl start`
(Running). limapy runs in a private LIMA_HOME with PYTHONPATH set to this repository.

Usage (root; one Debian guest at a time, the script takes /tmp/limapy-debian.lock itself):
  .venv/bin/python benchmarks/libvirt_compare.py [--runs 3] [--profile DIR]

`--profile DIR`: after each boot is measured (cloud-init done), where the guest's time
went, from inside it: `systemd-analyze`, its critical chain and blame, the CPU time of
limapy's and cloud-init's units and of a few others, and cloud-init's `analyze show` of
that boot, one file per boot in DIR (SIDE-RUN-cold|warm.txt).

When `virsh`, `virt-install`, `libvirtd` or qemu are missing it installs them with
apt-get (libvirt-daemon-system libvirt-clients virtinst qemu-system-x86, no recommends).
The test suite and scripts/bootstrap never do. Without systemd it starts virtlogd and
libvirtd itself and stops them at the end. /dev/kvm gets root:kvm 0660 for the run (as
udev would; without it libvirtd keeps re-probing QEMU), and its owner and mode are put
back at the end. Domains are named libvirt-compare-PID-N; only those are destroyed and
undefined. Everything it starts or writes is removed at the end, also on errors and
Ctrl-C.

Known differences left as they are, each what limapy picks under TCG and libvirt does not:
libvirt boots with SeaBIOS (limapy uses qboot when installed, about 1.5 s less), libvirt's
default devices (USB, balloon, ...), QEMU's default TCG translation cache, QEMU's `max`
CPU with ERMS and FSRM (`--cpu mode=maximum`; limapy drops them, lima.drivers.qemu
TCG_CPU_X86_64), and the image's own command line (limapy adds its TCG words:
lima.drivers.qemu.tcg_cmdline).

Programs it starts (a benchmark: these are not all in lima.hostprograms): apt-get, virsh,
virt-install, libvirtd, virtlogd, qemu-img, ssh, and python3 (`-m lima.cli`, limactl).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bootwatch import Points, Target, ssh_argv, watch_boot  # noqa: E402
from benchmarks.libvirt_host import (  # noqa: E402
    DOMAIN_PREFIX,
    URI,
    Guest,
    build_seed,
    domain_state,
    end_process,
    free_port,
    install_libvirt,
    kvm_for_libvirt,
    libvirt_daemon,
    remove_domain,
    sh,
    start,
    virt_install_argv,
)

EXAMPLE = REPO / "examples" / "default.yaml"
NAME = "default"  # the instance examples/default.yaml makes
RECIPE = "debian-12"  # examples/default.yaml: template:debian-12-local -> build:debian-12
LOCK = "/tmp/limapy-debian.lock"
DISK = "10G"
STOP_DEADLINE = 180.0

# -- measuring --------------------------------------------------------------------------------


def parse_ssh_config(text: str) -> Target | None:
    """(port, user, first identity file) of a limapy ssh.config, None when incomplete."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("=", " ", 1).partition(" ")
        found.setdefault(key.lower(), value.strip().strip('"'))
    if not {"port", "user", "identityfile"} <= found.keys():
        return None
    return int(found["port"]), found["user"], found["identityfile"]


PROFILE = ("sh", "-c", "'systemd-analyze; systemd-analyze critical-chain --no-pager; "
           "systemd-analyze blame --no-pager | head -20; "
           "systemctl show -p Id -p CPUUsageNSec --value \"lima-*\" \"cloud-*\" ssh.service "
           "dbus.service systemd-logind.service systemd-udevd.service | paste - - - ; "
           "sudo cloud-init analyze show | tail -n 42'")


def save_profile(dest: Path | None, target: Target | None, name: str) -> None:
    """The guest's own account of the boot just measured, into dest/name (with --profile)."""
    if dest is None or target is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(ssh_argv(*target, *PROFILE), capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        (dest / name).write_text(out.stdout + out.stderr)


@dataclass
class Run:
    side: str
    cold: Points = field(default_factory=Points)
    warm: Points = field(default_factory=Points)
    stop: float | None = None
    load: float = 0.0
    error: str = ""


class Limapy:
    """One limapy instance per run, from examples/default.yaml in a private LIMA_HOME."""

    def __init__(self, home: Path, profile: Path | None = None) -> None:
        self.home, self.profile, self.count = home, profile, 0
        home.mkdir(exist_ok=True)
        pypath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = dict(os.environ, LIMA_HOME=str(home), PYTHONPATH=pypath)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lima.cli", *args]

    def limactl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return sh(self.argv(*args), timeout=timeout, env=self.env)

    def _target(self, since: float) -> Callable[[], Target | None]:
        """ssh.config's port, user and key, once written for this start (after `since`)."""
        path = self.home / NAME / "ssh.config"

        def target() -> Target | None:
            try:
                if path.stat().st_mtime < since:
                    return None
                return parse_ssh_config(path.read_text())
            except (OSError, ValueError):
                return None
        return target

    def boot(self, kind: str, *args: str) -> Points:
        since = time.time() - 0.01
        t0 = time.monotonic()
        proc = start(self.argv(*args), env=self.env, log=self.home / "limactl.log")
        try:
            pts = watch_boot(t0, self._target(since), proc)
        finally:
            end_process(proc)
        save_profile(self.profile, self._target(since)(), f"limapy-{self.count}-{kind}.txt")
        return pts

    def run(self, run: Run) -> None:
        self.count += 1
        run.cold = self.boot("cold", "apply", str(EXAMPLE))
        if run.cold.done is None or run.cold.status.startswith("start"):
            raise RuntimeError(f"limactl apply: {run.cold.status}: {self.log_tail()}")
        t = time.monotonic()
        res = self.limactl("stop", NAME, timeout=STOP_DEADLINE)
        run.stop = time.monotonic() - t
        if res.returncode != 0:
            raise RuntimeError(f"limactl stop: {res.stderr.strip()[-500:]}")
        run.warm = self.boot("warm", "start", NAME)
        if run.warm.done is None or run.warm.status.startswith("start"):
            raise RuntimeError(f"limactl start: {run.warm.status}: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "limactl.log").read_text()[-400:].strip()
        return ""

    def guest_inputs(self) -> tuple[str, str, str]:
        """The running instance's user-data without boot scripts, network-config and
        hostname (from its seed)."""
        import pycdlib
        import yaml

        inst = self.home / NAME
        iso = pycdlib.PyCdlib()
        iso.open(str(inst / "cidata.iso"))
        try:
            texts = {}
            for name in ("network-config", "meta-data"):
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
                texts[name] = buf.getvalue().decode()
        finally:
            iso.close()
        host = str(yaml.safe_load(texts["meta-data"])["local-hostname"])
        return (inst / "cloud-config.yaml").read_text(), texts["network-config"], host

    def delete(self) -> None:
        self.limactl("delete", "-f", NAME, timeout=STOP_DEADLINE)


class Libvirt:
    """One libvirt domain per run, booted from an overlay on a copy of the image."""

    def __init__(self, work: Path, guest: Guest, user: str, key: str,
                 profile: Path | None = None) -> None:
        self.work, self.guest, self.count, self.profile = work, guest, 0, profile
        self.user, self.key = user, key  # limapy's guest user and its ssh key
        self.names: list[str] = []

    def run(self, run: Run) -> None:
        self.count += 1
        name = f"{DOMAIN_PREFIX}-{os.getpid()}-{self.count}"
        overlay, seed = self.work / f"{name}.qcow2", self.work / f"{name}-seed.iso"
        sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
            str(self.guest.image), str(overlay), DISK], check=True)
        build_seed(seed, self.guest, iid=name)
        port = free_port()
        self.names.append(name)
        t0 = time.monotonic()
        proc = start(virt_install_argv(name, self.guest, overlay, seed, port),
                     log=self.work / "virt-install.log")
        run.cold = watch_boot(t0, lambda: (port, self.user, self.key), proc)
        if run.cold.done is None or run.cold.status.startswith("start"):
            raise RuntimeError(f"virt-install: {run.cold.status}: {self.log_tail()}")
        save_profile(self.profile, (port, self.user, self.key), f"libvirt-{self.count}-cold.txt")
        t = time.monotonic()
        sh(["virsh", "-c", URI, "shutdown", name], check=True)
        while domain_state(name) != "shut off":
            if time.monotonic() - t > STOP_DEADLINE:
                raise RuntimeError(f"{name} did not stop")
            time.sleep(0.1)
        run.stop = time.monotonic() - t
        t0 = time.monotonic()
        proc = start(["virsh", "-c", URI, "start", name], log=self.work / "virsh.log")
        run.warm = watch_boot(t0, lambda: (port, self.user, self.key), proc)
        if run.warm.done is None or run.warm.status.startswith("start"):
            raise RuntimeError(f"virsh start: {run.warm.status}: {self.log_tail()}")
        save_profile(self.profile, (port, self.user, self.key), f"libvirt-{self.count}-warm.txt")
        remove_domain(name)
        self.names.remove(name)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "virt-install.log").read_text()[-400:].strip()
        return ""

    def cleanup(self) -> None:
        for name in list(self.names):
            with contextlib.suppress(Exception):
                remove_domain(name)
            self.names.remove(name)


# -- reporting --------------------------------------------------------------------------------

FIGURES = (("cold sshd", "cold", "banner"), ("cold login", "cold", "login"),
           ("cold done", "cold", "done"), ("cold return", "cold", "returned"),
           ("warm sshd", "warm", "banner"), ("warm login", "warm", "login"),
           ("warm done", "warm", "done"), ("warm return", "warm", "returned"))


def figures(run: Run) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        label: getattr(getattr(run, part), attr) for label, part, attr in FIGURES}
    out["stop"] = run.stop
    return out


def fmt(v: float | None) -> str:
    return f"{v:6.1f}s" if v is not None else "     - "


def medians(runs: Sequence[Run]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for run in runs:
        for key in figures(run):
            got = [v for r in runs if (v := figures(r)[key]) is not None]
            out[key] = statistics.median(got) if got else None
    return out


def report(runs: Sequence[Run]) -> str:
    lines = []
    meds = {side: medians([r for r in runs if r.side == side and not r.error])
            for side in ("limapy", "libvirt")}
    for side, med in meds.items():
        lines.append(f"-- median {side:7s}: " + ", ".join(f"{k} {fmt(v)}" for k, v in med.items()))
    ratios = []
    for key, lv in meds["libvirt"].items():
        lp = meds["limapy"].get(key)
        if lp is not None and lv:
            ratios.append(f"{key} {lp / lv:.2f}x")
    lines.append("-- limapy/libvirt: " + (", ".join(ratios) or "none (a side has no figures)"))
    return "\n".join(lines)


def print_run(i: int, run: Run) -> None:
    figs = ", ".join(f"{k} {fmt(v)}" for k, v in figures(run).items())
    tail = f" FAILED: {run.error}" if run.error else ""
    print(f"  run {i} {run.side:7s} (load {run.load:.2f}): {figs}; cloud-init "
          f"{run.cold.status or '-'}/{run.warm.status or '-'}{tail}", flush=True)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="save each boot's systemd-analyze and cloud-init analyze here")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    return args


def ensure_image(lima: Limapy) -> Guest:
    """The cached build of the recipe, built by `limactl create` when missing."""
    os.environ["PYTHONPATH"] = lima.env["PYTHONPATH"]
    from lima.drivers.images.build import cached_image

    built = cached_image(RECIPE)
    if built is None:
        print(f"build:{RECIPE} is not built: `limactl create` builds it", flush=True)
        res = lima.limactl("create", "--tty=false", "--name", "imageprep", str(EXAMPLE),
                           timeout=1800)
        lima.limactl("delete", "-f", "imageprep")
        built = cached_image(RECIPE)
        if built is None:
            raise SystemExit(f"no build:{RECIPE} after limactl create:\n{res.stderr[-2000:]}")
    if built.kernel is None or built.initrd is None or not built.cmdline:
        raise SystemExit(f"build:{RECIPE} has no kernel, initrd or cmdline")
    return Guest(built.image, built.kernel, built.initrd, " ".join(built.cmdline.split()),
                 "", "", "")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (libvirt's system daemon, /dev/kvm)")
    signal.signal(signal.SIGTERM, _interrupted)
    install_libvirt()
    work = Path(tempfile.mkdtemp(prefix="lvcmp", dir="/tmp"))
    work.chmod(0o755)  # libvirt's qemu runs as libvirt-qemu: it must reach the files
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    lima = Limapy(work / "lima-home", args.profile)
    runs: list[Run] = []
    try:
        image = ensure_image(lima)
        lock = open(LOCK, "w")  # noqa: SIM115
        print(f"waiting for {LOCK} ...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"libvirt comparison: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}"
              f", {args.runs} runs each, interleaved; work dir {work}", flush=True)
        with kvm_for_libvirt(), libvirt_daemon(work):
            run_interleaved(args.runs, lima, image, work, runs)
        print(report(runs), flush=True)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", flush=True)
        return 130
    finally:
        with contextlib.suppress(Exception):
            lima.delete()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if runs and not any(r.error for r in runs) else 1


def run_interleaved(count: int, lima: Limapy, image: Guest, work: Path, runs: list[Run]) -> None:
    """limapy, libvirt, limapy, ... `count` times each, appending to `runs`; stops at the
    first failure. Removes its libvirt domains before it returns (libvirtd is still up)."""
    libvirt: Libvirt | None = None
    try:
        for i in range(1, count + 1):
            for side in ("limapy", "libvirt"):
                run = Run(side, load=os.getloadavg()[0])
                try:
                    if side == "limapy":
                        lima.run(run)
                        if libvirt is None:
                            libvirt = _libvirt_from(lima, image, work)
                        lima.delete()
                    else:
                        assert libvirt is not None
                        libvirt.run(run)
                except (RuntimeError, OSError, subprocess.CalledProcessError,
                        subprocess.TimeoutExpired) as exc:
                    run.error = str(exc)[-600:]
                runs.append(run)
                print_run(i, run)
                if run.error:
                    return
    finally:
        if libvirt is not None:
            libvirt.cleanup()


def _libvirt_from(lima: Limapy, image: Guest, work: Path) -> Libvirt:
    """libvirt's side, from the first limapy instance: its user-data, network-config,
    hostname, user and key; the image, kernel and initrd copied where libvirt's qemu
    (user libvirt-qemu) can read them."""
    user_data, network_config, host = lima.guest_inputs()
    dest = parse_ssh_config((lima.home / NAME / "ssh.config").read_text())
    assert dest is not None
    files = work / "image"
    files.mkdir(mode=0o755)
    copies = {}
    for what in ("image", "kernel", "initrd"):
        src: Path = getattr(image, what)
        copies[what] = files / src.name
        shutil.copyfile(src, copies[what])
    guest = Guest(copies["image"], copies["kernel"], copies["initrd"], image.cmdline,
                  user_data, network_config, host)
    return Libvirt(work, guest, dest[1], dest[2], lima.profile)


if __name__ == "__main__":
    sys.exit(main())
