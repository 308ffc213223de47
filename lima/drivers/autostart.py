"""Start-at-login entries for instances: systemd user units, as Lima writes them on Linux.

Called by `limactl autostart enable|disable` and `limactl start-at-login`
(lima.commands.autostart). Lima's facts: only where systemd is the init system
(/run/systemd/system exists; elsewhere "autostart is not supported on linux"), the unit is
`$XDG_CONFIG_HOME/systemd/user/lima-vm@NAME.service` (XDG_CONFIG_HOME defaulting to
~/.config), mode 0644, running `LIMACTL start %i --foreground` in the home directory
(Type=simple, TimeoutSec=10, Restart=on-failure, WantedBy=default.target); registering
writes it and runs `systemctl --user enable` on it, unregistering runs `systemctl --user
disable` and removes it. limapy runs systemctl only when the user's systemd manager is
reachable (its socket `$XDG_RUNTIME_DIR/systemd/private`); otherwise the file alone is
written or removed and `pending_note` tells the user what to run in their session.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from lima.errors import LimaError

SYSTEMD_RUN_DIR = Path("/run/systemd/system")  # exists when systemd is PID 1
NOT_SUPPORTED = "autostart is not supported on linux"

_UNIT = """\
[Unit]
Description=Lima instance %i (limactl start %i)
Documentation=man:lima(1)

[Service]
ExecStart={binary} start %i --foreground
WorkingDirectory=%h
Type=simple
TimeoutSec=10
Restart=on-failure

[Install]
WantedBy=default.target
"""


class NotSupportedError(LimaError):
    """This host has no systemd to start instances at login."""


def supported() -> bool:
    return SYSTEMD_RUN_DIR.is_dir()


def require_supported() -> None:
    if not supported():
        raise NotSupportedError(NOT_SUPPORTED)


def unit_name(name: str) -> str:
    return f"lima-vm@{name}.service"


def unit_path(name: str) -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ.get("HOME", ""),
                                                               ".config")
    return Path(config) / "systemd" / "user" / unit_name(name)


def limactl_binary() -> str:
    """The limactl executable the unit runs: the one running now (symlinks resolved, as
    Go's os.Executable), else the one beside this Python (a venv), else PATH's."""
    argv0 = sys.argv[0]
    candidates = []
    if os.path.basename(argv0) == "limactl":
        candidates.append(argv0 if os.sep in argv0 else shutil.which(argv0))
    candidates.append(str(Path(sys.executable).parent / "limactl"))
    candidates.append(shutil.which("limactl"))
    for found in candidates:
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return os.path.realpath(found)
    raise LimaError("cannot find the limactl executable to write in the unit's ExecStart")


def render_unit(binary: str) -> str:
    return _UNIT.format(binary=binary)


def is_registered(name: str) -> bool:
    require_supported()
    try:
        unit_path(name).stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LimaError(str(exc)) from exc
    return True


def user_manager_socket() -> Path | None:
    """The user's systemd manager socket when it is there to talk to, else None."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        return None
    sock = Path(runtime) / "systemd" / "private"
    try:
        import stat

        return sock if stat.S_ISSOCK(sock.stat().st_mode) else None
    except OSError:
        return None


def pending_note(name: str, action: str) -> str:
    where = os.environ.get("XDG_RUNTIME_DIR")
    why = (f"no systemd user manager answers at {where}/systemd/private" if where
           else "XDG_RUNTIME_DIR is not set, so no systemd user manager is reachable")
    return (f"{why}: systemctl was not run; run `systemctl --user {action} "
            f"{unit_name(name)}` in your login session")


def _systemctl(action: str, name: str) -> bool:
    """`systemctl --user ACTION lima-vm@NAME.service` when the user manager is reachable;
    False when it is not (nothing run). Its output goes to the user, as in Lima."""
    from lima.drivers import runner

    if user_manager_socket() is None:
        return False
    try:
        result = runner.run(["systemctl", "--user", action, unit_name(name)], check=False)
    except runner.CommandError as exc:
        raise LimaError(exc.stderr.strip() or str(exc)) from None
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise LimaError(f"exit status {result.returncode}")
    return True


def register(name: str) -> bool:
    """Write the unit and enable it; returns whether systemctl ran (see pending_note)."""
    from lima.fsutil import atomic_write

    require_supported()
    content = render_unit(limactl_binary())
    path = unit_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content, mode=0o644)
    return _systemctl("enable", name)


def unregister(name: str) -> bool:
    """Disable the unit and remove it; returns whether systemctl ran."""
    if not is_registered(name):
        return True
    try:
        ran = _systemctl("disable", name)
    except LimaError as exc:
        raise LimaError(f"failed to disable the autostart entry for instance `{name}`: "
                        f"{exc}") from None
    try:
        unit_path(name).unlink()
    except OSError as exc:
        raise LimaError(f"failed to remove the autostart entry for instance `{name}`: "
                        f"{exc}") from None
    return ran
