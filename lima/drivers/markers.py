"""boot.sh's markers and a resumed guest's clock, read over ssh: the guest commands
(pure, POSIX sh: dash, bash, busybox), their answers' parsers, and MarkerLooker.

Used by lima.drivers.ssh's SSHGuest (readiness) and read_marker. boot.sh
(lima/assets/cidata/boot.sh) writes the markers: /run/lima-ssh-ready, /run/lima-boot-done
or /run/lima-boot-failed, each holding the boot's IID (LIMA_CIDATA_IID) first. Shell builtins only:
under TCG every program the guest starts costs it tenths of a second of CPU.
"""

from __future__ import annotations

import shlex
import time

import paramiko

from lima.drivers.guest import BOOT_DONE_MARKER, BOOT_FAILED_MARKER, SSH_READY_MARKER
from lima.errors import TemporaryError

# Right after a resume the clock stands where it was saved: set it unless it is this close.
RESUMED_MAX_SKEW = 1.0


def marker_command(path: str) -> str:
    """The guest command that prints a text file, failing when it cannot be read (pure).

    Shell builtins only (POSIX sh), unlike `cat`: readiness polls the markers of a TCG
    guest, where every program started costs a tenth of a second of its CPU."""
    p = shlex.quote(path)
    return (f"[ -r {p} ] || exit 1; "
            f'while IFS= read -r l || [ -n "$l" ]; do printf \'%s\\n\' "$l"; done < {p}')


# How long one boot_wait_command waits in the guest before it answers "not yet" (the host
# agent then checks whether it is stopping, and asks again), and how often it looks.
BOOT_WAIT_BATCH = 3.0
BOOT_WAIT_INTERVAL = 0.2


def boot_wait_command(iid: str, *, done_path: str = BOOT_DONE_MARKER,
                      failed_path: str = BOOT_FAILED_MARKER,
                      batch: float = BOOT_WAIT_BATCH,
                      interval: float = BOOT_WAIT_INTERVAL) -> str:
    """The guest command that waits up to `batch` seconds for boot.sh's outcome (pure).

    It prints `done` once `done_path` holds `iid`, or `failed` then `failed_path`'s lines
    once that exists, else exits 1 after `batch` seconds. One command, looking every
    `interval` seconds with shell builtins and `sleep`: polling from the host cost an ssh
    session (sshd's fork, the login shell's exec) per look and marker, ten a second,
    taken from a TCG guest while cloud-init's last stages and boot.sh run."""
    tries = max(1, round(batch / interval))
    done, failed = shlex.quote(done_path), shlex.quote(failed_path)
    return (f": lima-boot-wait; i=0; while [ $i -lt {tries} ]; do "
            f"d=; {{ read -r d < {done}; }} 2>/dev/null; "
            f'if [ "$d" = {shlex.quote(iid)} ]; then echo done; exit 0; fi; '
            f"if [ -r {failed} ]; then echo failed; "
            f"while IFS= read -r l || [ -n \"$l\" ]; do printf '%s\\n' \"$l\"; done < {failed}; "
            f"exit 0; fi; "
            f"sleep {interval:g}; i=$((i + 1)); done; exit 1")


def parse_boot_wait(out: str, iid: str) -> str | None:
    """boot_wait_command's answer: "" (done), the failure record (without the IID; "see
    logs" when empty), or None (not yet)."""
    lines = out.splitlines()
    if not lines:
        return None
    if lines[0].strip() == "done":
        return ""
    if lines[0].strip() == "failed":
        record = "\n".join(lines[1:]).strip()
        return f"provisioning failed: {record.replace(iid, '').strip() or 'see logs'}"
    return None


def markers_command(*, ready_path: str = SSH_READY_MARKER, done_path: str = BOOT_DONE_MARKER,
                    failed_path: str = BOOT_FAILED_MARKER) -> str:
    """The command readiness looks at boot.sh's markers with (POSIX sh: dash, bash,
    busybox): it prints `ssh-ready <marker>`, `boot-done <marker>` and `boot-failed
    <marker>` (first lines, empty when missing).

    One command for the three, of shell builtins only: every program a TCG guest starts
    costs it tenths of a second of CPU (a just-resumed one, that program's translation
    again), and a cold boot's first login often finds boot.sh done already."""
    return (f"r=; d=; f=; {{ read -r r < {ready_path}; }} 2>/dev/null; "
            f"{{ read -r d < {done_path}; }} 2>/dev/null; "
            f"{{ read -r f < {failed_path}; }} 2>/dev/null; "
            'echo "ssh-ready $r"; echo "boot-done $d"; echo "boot-failed $f"')


def looker_command() -> str:
    """markers_command, then again for each line read on stdin, until it ends: readiness's
    looks at the markers all go through this one shell (MarkerLooker)."""
    look = markers_command()
    return f"{look}; while read -r _; do {look}; done"


class MarkerLooker:
    """boot.sh's markers, looked at through one shell that stays in the guest.

    A look over a command of its own costs the guest an sshd session and a shell's exec,
    0.3-1 s of CPU under TCG while cloud-init's last stages run; through this shell
    (looker_command on one channel) a look is a line sent and markers_command's three
    lines read back, shell builtins only, and the shell sleeps in `read` between looks.
    Failures are TemporaryError."""

    def __init__(self, client: paramiko.SSHClient, timeout: float = 20.0) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise TemporaryError("ssh connection is closed")
        self.client = client
        self.timeout = timeout
        self._asked = False
        try:
            self._chan = transport.open_session(timeout=timeout)
            self._chan.settimeout(timeout)
            self._chan.exec_command(looker_command())
            self._out = self._chan.makefile("rb")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TemporaryError(f"ssh: cannot start the markers' shell: {exc}") from exc

    def look(self) -> dict[str, str]:
        try:
            if self._asked:
                self._chan.sendall(b"\n")
            self._asked = True
            lines = [self._out.readline() for _ in range(3)]
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TemporaryError(f"ssh: the markers' shell: {exc}") from exc
        if not all(line.endswith(b"\n") for line in lines):
            raise TemporaryError("ssh: the markers' shell ended")
        return parse_resumed_check(b"".join(lines).decode(errors="replace"))

    def close(self) -> None:
        self._chan.close()


def resumed_clock_command(host_now: float, user: str) -> str:
    """The command that sets a resumed guest's clock (POSIX sh: dash, bash, busybox).

    It prints `clock <date -u +%s>`; when that is more than RESUMED_MAX_SKEW off `host_now`
    it sets the clock (sudo unless root) to `host_now` and prints `clock-set` or
    `clock-failed <error>`.
    """
    low, high = int(host_now - RESUMED_MAX_SKEW), int(host_now + RESUMED_MAX_SKEW) + 1
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(host_now + 0.5))
    sudo = "" if user == "root" else "sudo -n "
    return (f'g=$(date -u +%s); echo "clock $g"; '
            f'if [ "$g" -lt {low} ] || [ "$g" -gt {high} ]; then '
            f"if e=$({sudo}date -u -s '{stamp}' 2>&1 >/dev/null); then echo clock-set; "
            'else echo "clock-failed $(echo $e)"; fi; fi')


def parse_resumed_check(out: str) -> dict[str, str]:
    """markers_command's and resumed_clock_command's answers: each line's first
    word -> the rest (stripped)."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, rest = line.strip().partition(" ")
        if key:
            found[key] = rest.strip()
    return found
