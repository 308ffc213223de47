"""The host programs limapy and its tests run, and the Debian package of each.

One table, `PROGRAMS`: argv[0]'s basename -> its Debian package and why it is needed.
scripts/bootstrap installs these packages; tests/unit/test_host_programs.py checks both
directions (every program the code starts is in the table, every package the table names
is in bootstrap, nothing in bootstrap is unexplained) so that a machine which happens to
have a program installed by hand cannot hide a gap a fresh Debian 12 machine would show.

At run time `lima.drivers.runner` (`run`, `spawn`) and `limactl shell` (its `execvp`)
call `check_program(argv[0])`. It does nothing unless LIMAPY_CHECK_PROGRAMS=1, which
tests/conftest.py sets for a whole pytest session; the limactl and host-agent processes
the integration tests start inherit it. Then a program the table lacks is refused as if
it were not installed, and appended to the file named by LIMAPY_PROGRAMS_LOG, which the
session-finish hook reads: a miss fails the suite even when it happens in a subprocess
whose error is swallowed (a mount failing only degrades an instance).

Imports nothing from lima but errors: the runner imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass

from lima.errors import LimaError

CHECK_ENV = "LIMAPY_CHECK_PROGRAMS"
LOG_ENV = "LIMAPY_PROGRAMS_LOG"


@dataclass(frozen=True)
class HostProgram:
    """One program started on the host, keyed by argv[0]'s basename."""

    name: str
    package: str  # the Debian 12 package that ships it (`dpkg -S /path/to/program`)
    why: str
    lima: bool = True  # lima/ starts it (through the runner or `limactl shell`)
    tests: bool = False  # tests/ or benchmarks/ start it themselves
    # False only for programs of opt-in features that bootstrap leaves to the user.
    bootstrap: bool = True


# limapy's recipes and defaults are x86_64: other guest architectures are an opt-in.
_QEMU_FOREIGN = "guests, emulated (opt-in)"

_TABLE = (
    HostProgram("qemu-system-x86_64", "qemu-system-x86",
                "boots every instance (host agent); the KVM probe", tests=True),
    HostProgram("qemu-system-aarch64", "qemu-system-arm", f"`arch: aarch64` {_QEMU_FOREIGN}",
                bootstrap=False),
    HostProgram("qemu-system-arm", "qemu-system-arm", f"`arch: armv7l` {_QEMU_FOREIGN}",
                bootstrap=False),
    HostProgram("qemu-system-riscv64", "qemu-system-misc", f"`arch: riscv64` {_QEMU_FOREIGN}",
                bootstrap=False),
    HostProgram("qemu-system-ppc64", "qemu-system-ppc", f"`arch: ppc64le` {_QEMU_FOREIGN}",
                bootstrap=False),
    HostProgram("qemu-system-s390x", "qemu-system-s390x", f"`arch: s390x` {_QEMU_FOREIGN}",
                bootstrap=False),
    HostProgram("qemu-img", "qemu-utils",
                "diffdisk overlays, image info, snapshots of stopped instances; the recipes' "
                "qcow2 images", tests=True),
    HostProgram("ssh", "openssh-client",
                "`limactl shell` execs it; ssh.config asks `ssh -V` its version; the host "
                "agent's `ssh -N -R` for reverse port forwards; `limactl tunnel`'s `ssh -D`; "
                "`ssh -O exit` after `limactl snapshot apply` on a running instance",
                tests=True),
    HostProgram("scp", "openssh-client",
                "`limactl copy` (its scp backend, over the instance's ssh.config); the mounts "
                "benchmark's baseline", tests=True),
    HostProgram("rsync", "rsync", "`limactl copy` (its rsync backend)"),
    HostProgram("sftp-server", "openssh-sftp-server",
                "host end of reverse-sshfs mounts (/usr/lib/openssh/sftp-server)"),
    HostProgram("virtiofsd", "qemu-system-common",
                "`mountType: virtiofs`: one per mount, started by the host agent before qemu "
                "(QEMU's C virtiofsd, /usr/lib/qemu/virtiofsd)"),
    HostProgram("unshare", "util-linux",
                "runs QEMU's virtiofsd in a user namespace when limactl is not root"),
    HostProgram("ansible-playbook", "ansible-core",
                "`provision: mode: ansible` steps (deprecated in Lima), run by the host agent",
                tests=True),
    HostProgram("zstd", "zstd", "decompresses .zst images", tests=True),
    HostProgram("python3", "python3-venv",
                "limapy's own interpreter, .venv/bin/python (bootstrap's `python3 -m venv`): "
                "the host agent, the tests' limactl", tests=True),
    HostProgram("apt-get", "apt", "`apt-get download`: the kernel and build:tiny's packages"),
    HostProgram("apt-cache", "apt", "package versions for the build cache keys"),
    HostProgram("debootstrap", "debootstrap", "build:debian-12's root file system"),
    HostProgram("chroot", "coreutils", "build:debian-12 configures its root file system"),
    HostProgram("mkfs.ext4", "e2fsprogs", "build:debian-12's ext4 image (`mkfs.ext4 -d`)"),
    HostProgram("mount", "mount", "build:debian-12 mounts /proc in its root file system while "
                "it lists what importing cloud-init reads"),
    HostProgram("umount", "mount", "detaches a failed build's chroot mounts before removal"),
    HostProgram("dpkg-deb", "dpkg", "build:tiny unpacks its .debs"),
    HostProgram("ldd", "libc-bin", "build:tiny finds dropbear's shared libraries"),
    HostProgram("busybox", "busybox-static",
                "build:tiny lists the applets of the busybox it unpacked; the tests run the "
                "host's to check boot.sh and the tiny /init", tests=True),
    HostProgram("systemctl", "systemd",
                "`limactl autostart`: `systemctl --user enable (or disable) lima-vm@NAME.service`, "
                "only when a systemd user manager runs", bootstrap=False),
    HostProgram("ed", "ed", "`limactl edit`'s $EDITOR in the tests (it reads its commands "
                "from stdin)"),
    HostProgram("editor", "nano", "`limactl edit` without $VISUAL/$EDITOR (Debian's "
                "alternatives link; nano provides it on a standard install)", bootstrap=False),
    HostProgram("vim", "vim", "`limactl edit`: Lima's next editor after `editor`",
                bootstrap=False),
    HostProgram("vi", "vim-tiny", "`limactl edit`: Lima's next editor after vim",
                bootstrap=False),
    HostProgram("emacs", "emacs-nox", "`limactl edit`: Lima's last editor", bootstrap=False),
    HostProgram("ssh-keygen", "openssh-client", "guest keys in the image tests",
                lima=False, tests=True),
    HostProgram("debugfs", "e2fsprogs", "reads files out of the built ext4 image",
                lima=False, tests=True),
    HostProgram("dash", "dash", "boot.sh under dash, the guest's /bin/sh",
                lima=False, tests=True),
    HostProgram("sh", "dash", "runs generated shell scripts", lima=False, tests=True),
    HostProgram("bash", "bash", "sources `limactl completion bash` and drives its function",
                lima=False, tests=True),
    HostProgram("setpriv", "util-linux", "runs virtiofsd as an unprivileged user",
                lima=False, tests=True),
    HostProgram("sleep", "coreutils", "a stand-in child process", lima=False, tests=True),
    HostProgram("true", "coreutils", "a child that exits at once", lima=False, tests=True),
    HostProgram("curl", "curl", "the download benchmark's baseline", lima=False, tests=True),
    HostProgram("head", "coreutils", "endless stdin in the faults benchmark",
                lima=False, tests=True),
    HostProgram("git", "git", "the faults benchmark names the commit it measured",
                lima=False, tests=True),
)  # fmt: skip

PROGRAMS: dict[str, HostProgram] = {p.name: p for p in _TABLE}

# `python`, `python3`, `python3.11`: limapy re-running itself under the venv's interpreter.
_PYTHON = re.compile(r"python3?(\.\d+)*")


class UnlistedProgramError(LimaError):
    """Under LIMAPY_CHECK_PROGRAMS=1: a program that is not in `PROGRAMS`."""


def program_name(argv0: str) -> str:
    """The table key for argv[0]: its basename; limapy's own interpreter is `python3`."""
    base = os.path.basename(argv0)
    if argv0 == sys.executable or _PYTHON.fullmatch(base):
        return "python3"
    return base


def bootstrap_packages() -> set[str]:
    """The Debian packages scripts/bootstrap must install."""
    return {p.package for p in _TABLE if p.bootstrap}


def check_program(argv0: str) -> None:
    """Refuse (and record) a program the table lacks, when LIMAPY_CHECK_PROGRAMS=1.

    Off, it costs one environment lookup. A program that is not on this machine at all
    is let through: it fails as "not found" on every machine, which no table hides.
    """
    if os.environ.get(CHECK_ENV) != "1":
        return
    name = program_name(argv0)
    if name in PROGRAMS:
        return
    found = os.path.exists(argv0) if "/" in argv0 else shutil.which(argv0) is not None
    if not found:
        return
    msg = (f"{argv0}: not in lima.hostprograms.PROGRAMS; add it with its Debian package "
           "(and add the package to scripts/bootstrap)")
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        # One short O_APPEND write per line: lines from concurrent processes do not mix.
        line = f"{name}\t{argv0}\tpid {os.getpid()}: {' '.join(sys.argv)[:200]}\n"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    raise UnlistedProgramError(msg)


def markdown_table() -> str:
    """The README's "Host programs" table (a test keeps the README in step with it)."""
    rows = ["| program | Debian package | run by | why |", "|---|---|---|---|"]
    for p in _TABLE:
        by = ", ".join(who for who, yes in (("limapy", p.lima), ("tests", p.tests)) if yes)
        note = "" if p.bootstrap else " (not in bootstrap)"
        rows.append(f"| `{p.name}` | `{p.package}`{note} | {by} | {p.why} |")
    return "\n".join(rows) + "\n"
