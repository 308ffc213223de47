"""The host agent's part of the mounts: reverse-sshfs served over its ssh, 9p/virtiofs checked.

Called by the host agent (through lima.drivers.ssh.SSHGuest's after_boot, `mount_all`) once
the guest is provisioned. 9p and virtiofs mounts are QEMU devices that boot.sh mounts
under cloud-init from the seed's fstab lines (lima.drivers.virtfs); the agent checks each one
is mounted, mounts it itself when not (a guest without cloud-init, or a mount that failed),
and reports the guest's error when that fails. For reverse-sshfs, for each mount the guest
runs `sshfs -o slave :LOCATION MOUNTPOINT` in an ssh exec channel whose stdin/stdout are
piped to a local `sftp-server` (read-only with `-R` unless the mount is writable). The mount
lives as long as that channel: when the guest unmounts or powers off, the channel closes and
the local sftp-server exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko

from lima.drivers import runner, virtfs
from lima.drivers.ssh import run
from lima.errors import LimaError
from lima.schemas.spec import Mount

log = logging.getLogger(__name__)

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server")
MOUNT_TIMEOUT = 20.0


def sftp_server() -> str | None:
    return next((p for p in SFTP_SERVERS if Path(p).exists()), None)


def sshfs_command(mount: Mount) -> str:
    """The guest command for one mount (pure; unit-testable)."""
    mp = shlex.quote(mount.mount_point)
    opts = ["slave", "allow_other"]
    if not mount.writable:
        opts.append("ro")
    cache = mount.sshfs.get("cache")
    if cache is not None:
        opts.append(f"cache={'yes' if cache else 'no'}")
    if mount.sshfs.get("followSymlinks"):
        opts.append("follow_symlinks")
    # A mount left by a host agent that died is a dead FUSE mount ("Transport endpoint
    # is not connected"): detach it first, or the new sshfs cannot mount there.
    return (f"{{ sudo umount -l {mp} 2>/dev/null || true; }} && "
            f"sudo mkdir -p {mp} && exec sudo sshfs -o {','.join(opts)} "
            f"{shlex.quote(':' + mount.location)} {mp}")


def _pump_in(chan: paramiko.Channel, proc: runner.Popen[bytes]) -> None:
    """guest sshfs -> local sftp-server; on EOF close the server's stdin so it exits."""
    assert proc.stdin is not None
    try:
        while data := chan.recv(65536):
            proc.stdin.write(data)
            proc.stdin.flush()
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except runner.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pump_out(chan: paramiko.Channel, proc: runner.Popen[bytes]) -> None:
    """local sftp-server -> guest sshfs."""
    assert proc.stdout is not None
    try:
        while data := os.read(proc.stdout.fileno(), 65536):
            chan.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            chan.shutdown_write()


def mount_one(client: paramiko.SSHClient, mount: Mount) -> None:
    """Mount one host directory in the guest; LimaError when it does not come up."""
    server = sftp_server()
    if server is None:
        raise LimaError("sftp-server not found on the host (install openssh-sftp-server)")
    Path(mount.location).mkdir(parents=True, exist_ok=True)
    transport = client.get_transport()
    if transport is None:
        raise LimaError("ssh connection is closed")
    argv = [server] + ([] if mount.writable else ["-R"])
    proc = runner.spawn(argv, stdin=runner.PIPE, stdout=runner.PIPE,
                        stderr=runner.DEVNULL)
    chan = transport.open_session(timeout=10)
    chan.exec_command(sshfs_command(mount))
    threading.Thread(target=_pump_in, args=(chan, proc), daemon=True).start()
    threading.Thread(target=_pump_out, args=(chan, proc), daemon=True).start()
    check = f"mountpoint -q {shlex.quote(mount.mount_point)}"
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if chan.exit_status_ready():
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            raise LimaError(f"sshfs exited with status {chan.recv_exit_status()}: "
                            f"{err.decode(errors='replace').strip()}")
        rc, _, _ = run(client, check, timeout=10)
        if rc == 0:
            return
        time.sleep(0.25)
    chan.close()
    raise LimaError(f"not mounted after {MOUNT_TIMEOUT:g} s")


def is_mounted_command(mount_point: str) -> str:
    """A guest command that succeeds when `mount_point` is in /proc/mounts (pure).

    Shell builtins only (POSIX sh: dash, bash, busybox): no `mountpoint -q`, which busybox
    guests (build:tiny) may lack (a failed check would mount the device a second time:
    EBUSY), and no awk: in a TCG guest every program started costs a tenth of a second.
    /proc/mounts writes a space, tab, newline and backslash as octal escapes; `read -r`
    keeps them, so the wanted name is compared in that form.
    """
    encoded = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in mount_point)
    return (f"(M={shlex.quote(encoded)}; while read -r d p r; do "
            '[ "$p" = "$M" ] && exit 0; done < /proc/mounts; exit 1)')


def virtfs_command(mount_type: str, mounts: Sequence[Mount]) -> str:
    """The guest command that mounts each 9p/virtiofs device not mounted yet (pure).

    It prints `mount-ok I` for each mount (by its index) that is mounted, `mount-failed I
    WORDS` for one that could not be. Those all mounted (cloud-init did it at boot) cost no
    sudo; else one sudo runs the mounts, as a resumed guest's first programs cost it their
    translation again.
    """
    checks, steps = [], []
    for i, m in enumerate(mounts):
        mp = shlex.quote(m.mount_point)
        tag = shlex.quote(virtfs.mount_tag(m.location, m.mount_point))
        opts = virtfs.guest_options(mount_type, m).removesuffix(",nofail")
        mounted = is_mounted_command(m.mount_point)
        checks.append(f"{mounted} && echo 'mount-ok {i}'")
        steps.append(f"if {mounted}; then echo 'mount-ok {i}'; "
                     f"elif e=$({{ [ -d {mp} ] || mkdir -p {mp}; }} 2>&1 && "
                     f"mount -t {mount_type} -o {opts} {tag} {mp} 2>&1); then "
                     f"echo 'mount-ok {i}'; "
                     f"else printf 'mount-failed {i} %s\\n' \"$(printf '%s\\n' \"$e\" | "
                     "tail -n 1)\"; fi")
    return (f"{{ {' && '.join(checks)}; }} 2>/dev/null || "
            f"sudo -n sh -c {shlex.quote('; '.join(steps))}")


def mount_virtfs(client: paramiko.SSHClient, mount_type: str,
                 mounts: Sequence[Mount]) -> list[str | None]:
    """Make sure each 9p/virtiofs mount is mounted, in one guest command: per mount, None
    when it is, else the guest's words (its last line) why not."""
    if not mounts:
        return []
    try:
        rc, out, err = run(client, virtfs_command(mount_type, mounts), timeout=MOUNT_TIMEOUT)
    except LimaError as exc:
        return [str(exc)] * len(mounts)
    ok, failed = set(), {}
    for line in out.splitlines():
        word, _, rest = line.strip().partition(" ")
        index, _, why = rest.partition(" ")
        if word == "mount-ok":
            ok.add(index)
        elif word == "mount-failed":
            failed[index] = why.strip()
    whole = (err or out).strip().splitlines()
    other = whole[-1] if whole else f"exit status {rc}"
    return [None if str(i) in ok else failed.get(str(i)) or other for i in range(len(mounts))]


def mount_all(client: paramiko.SSHClient, mounts: Sequence[Mount],
              mount_type: str = "reverse-sshfs") -> list[str]:
    """Mount every spec mount; returns one error per mount that failed (degraded)."""
    if mount_type in virtfs.VIRTFS_TYPES:
        outcomes = mount_virtfs(client, mount_type, mounts)
    else:
        outcomes = []
        for mount in mounts:
            try:
                mount_one(client, mount)
                outcomes.append(None)
            except (LimaError, OSError, paramiko.SSHException) as exc:
                outcomes.append(str(exc))
    errors = []
    for mount, failed in zip(mounts, outcomes, strict=True):
        if failed is None:
            log.info("mounted %s on %s (%s%s)", mount.location, mount.mount_point, mount_type,
                     "" if mount.writable else ", read-only")
            continue
        log.error("mount %s on %s failed: %s", mount.location, mount.mount_point, failed)
        errors.append(f"mount {mount.location} on {mount.mount_point} ({mount_type}) "
                      f"failed: {failed}")
    return errors
