"""The ssh poller of benchmarks/libvirt_compare.py: when a booting guest's sshd first
answers, when a user can first log in, and when cloud-init has finished.

The same poller, with the same options, watches both sides. Three phases, each starting
when the one before it ends, each timed from the command that started the guest:

1. sshd answers (`banner`): a TCP connection to the forwarded port every BANNER_EVERY s
   (at most BANNERS_AT_ONCE open, each given BANNER_LIFE s) until one reads sshd's
   `SSH-` greeting. QEMU's user networking accepts on the host side at once, whatever
   the guest is doing, and a connection made before the guest's NIC is up waits in
   QEMU's SYN retries for seconds; these cost the host a socket and the guest nothing
   until its sshd is there. Before this phase existed, ssh logins were the probes, at
   most two in flight: two stuck in those retries kept the poller from trying again for
   up to ssh's ConnectTimeout.
2. the first login (`login`): `ssh ... LOGIN` every PROBE_EVERY s, at most
   PROBES_AT_ONCE in flight (each one costs the guest an sshd of its own). Logins fail
   until the guest lets users in (systemd-user-sessions removes /run/nologin). LOGIN is a
   shell builtin and a `cat`: the figure is the login, not the start of a Python program
   (`cloud-init status` takes 1-3 s to start in a guest starved under TCG, which the
   earlier poller added to this figure).
3. cloud-init done (`done`): the first login's output already holds /run/cloud-init/
   result.json when cloud-init had finished; otherwise one more login waits in the guest
   for the file (WAIT) and prints it. cloud-init writes result.json at the end of its
   last stage, after the final status.json, and `cloud-init status` says done (or error,
   with the errors result.json lists) from the moment it exists. The status is then
   confirmed once, untimed, by `cloud-init status` itself; a disagreement is reported in
   the run's status.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

BOOT_DEADLINE = 600.0

SSH_OPTS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "IdentitiesOnly=yes")

RESULT = "/run/cloud-init/result.json"
LOGGED_IN = "limapy-bench-login"
LOGIN = ("sh", "-c", f"'echo {LOGGED_IN}; cat {RESULT} 2>/dev/null'")
WAIT = ("sh", "-c", f"'while [ ! -e {RESULT} ]; do sleep 0.1; done; sleep 0.05; cat {RESULT}'")
STATUS = ("cloud-init", "status")
BANNER_EVERY, BANNERS_AT_ONCE, BANNER_LIFE = 0.25, 4, 3.0
PROBE_EVERY, PROBES_AT_ONCE, PROBE_LIFE = 0.5, 2, 30.0
TICK = 0.05

Target = tuple[int, str, str]  # port on 127.0.0.1, user, private key


@dataclass
class Points:
    banner: float | None = None  # seconds from the start command to sshd's greeting
    login: float | None = None  # ... to the first ssh login
    done: float | None = None  # ... to cloud-init's result.json
    returned: float | None = None  # ... to the start command's return (limapy: Running)
    status: str = ""


def ssh_argv(port: int, user: str, key: str, *command: str) -> list[str]:
    return ["ssh", *SSH_OPTS, "-i", key, "-p", str(port), f"{user}@127.0.0.1", *command]


def result_status(text: str) -> str | None:
    """`done` or `error` from result.json's text, None when it is not (yet) whole."""
    try:
        errors = json.loads(text)["v1"]["errors"]
    except (ValueError, KeyError, TypeError):
        return None
    return "error" if errors else "done"


def cloud_init_says(output: str) -> str:
    """The word after `status:` in `cloud-init status` output ('' when there is none)."""
    if "status:" not in output:
        return ""
    words = output.split("status:", 1)[1].split()
    return words[0] if words else ""


class BannerWatch:
    """Phase 1: short TCP connections until one reads sshd's greeting."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[tuple[float, socket.socket]] = []
        self.next_try = 0.0

    def step(self, now: float) -> bool:
        """One look (never blocks); True once a connection has read `SSH-`."""
        seen = False
        if self.socks:
            ready, _, _ = select.select([s for _, s in self.socks], [], [], 0)
            for started, sock in list(self.socks):
                data = b""
                if sock in ready:
                    with contextlib.suppress(OSError):
                        data = sock.recv(64)
                    if data.startswith(b"SSH-"):
                        seen = True
                if sock in ready or now - started >= BANNER_LIFE:
                    self.socks.remove((started, sock))
                    sock.close()
        if seen:
            self.close()
            return True
        if now >= self.next_try and len(self.socks) < BANNERS_AT_ONCE:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                sock.connect(("127.0.0.1", self.port))
            self.socks.append((now, sock))
            self.next_try = now + BANNER_EVERY
        return False

    def close(self) -> None:
        for _, sock in self.socks:
            sock.close()
        self.socks.clear()


class Logins:
    """ssh commands in the background, each with its start time."""

    def __init__(self) -> None:
        self.inflight: list[tuple[float, subprocess.Popen[str]]] = []

    def start(self, now: float, dest: Target, command: tuple[str, ...]) -> None:
        self.inflight.append((now, subprocess.Popen(
            ssh_argv(*dest, *command), stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)))

    def finished(self, now: float, life: float | None) -> list[str]:
        """Output of every login that ended (or outlived `life` s and was killed)."""
        out = []
        for started, p in list(self.inflight):
            if p.poll() is None and (life is None or now - started < life):
                continue
            self.inflight.remove((started, p))
            if p.poll() is None:
                p.kill()
            out.append(p.communicate()[0] or "")
        return out

    def close(self) -> None:
        for _, p in self.inflight:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.inflight.clear()


def watch_boot(t0: float, target: Callable[[], Target | None],
               proc: subprocess.Popen[str] | None = None) -> Points:
    """Watch the guest from t0 until cloud-init is done (or errs): the module's phases.

    `target` gives the forwarded ssh port, user and key once known. `proc` (the start
    command) has its return time recorded on the way.
    """
    pts = Points()
    banner: BannerWatch | None = None
    logins = Logins()
    next_try = t0
    try:
        while time.monotonic() - t0 < BOOT_DEADLINE:
            now = time.monotonic()
            if proc is not None and pts.returned is None and proc.poll() is not None:
                pts.returned = now - t0
                if proc.returncode != 0:
                    pts.status = f"start command failed ({proc.returncode})"
                    return pts
            for out in logins.finished(now, PROBE_LIFE if pts.login is None else None):
                if LOGGED_IN not in out and pts.login is None:
                    continue
                if pts.login is None:
                    pts.login = now - t0
                status = result_status(out.split(LOGGED_IN, 1)[-1])
                if status is not None and pts.done is None:
                    pts.done, pts.status = now - t0, status
            dest = target()
            if pts.done is not None and (proc is None or pts.returned is not None):
                if dest is not None:
                    confirm(pts, dest)
                return pts
            if dest is not None and pts.banner is None:
                banner = banner or BannerWatch(dest[0])
                if banner.step(now):
                    pts.banner = now - t0
            elif dest is not None and pts.done is None and now >= next_try:
                limit = PROBES_AT_ONCE if pts.login is None else 1
                if len(logins.inflight) < limit:
                    logins.start(now, dest, LOGIN if pts.login is None else WAIT)
                    next_try = now + PROBE_EVERY
            time.sleep(TICK)
        pts.status = pts.status or "deadline"
        return pts
    finally:
        logins.close()
        if banner is not None:
            banner.close()


def confirm(pts: Points, dest: Target) -> None:
    """Ask `cloud-init status` itself (untimed); note it when it disagrees."""
    try:
        out = subprocess.run(ssh_argv(*dest, *STATUS), capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        pts.status += f" (cloud-init status: {exc})"
        return
    said = cloud_init_says(out)
    if said != pts.status:
        pts.status += f" (cloud-init status: {said or 'no answer'})"
