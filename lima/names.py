"""Instance names: the one place that says which names are valid and what they map to.

Every verb turns a user's NAME into an instance directory through `instance_dir_for()`
(never `paths.lima_home() / name` directly), so no name can reach a path outside
`$LIMA_HOME/NAME`. `guest_hostname()` is the guest's host name and the `Host` entry of
ssh.config, for everyone who needs it (cloud-init, ssh.config, `limactl shell`, `list`).
Pure: string checks and path arithmetic, no files touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from lima import paths
from lima.errors import SpecError

# Lima's rule: letters and digits, with single '.', '_' or '-' between them.
_NAME_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
# The longest socket path placed in an instance directory (ssh's ControlPath gets a random
# suffix while it is being created, as OpenSSH does).
_LONGEST_SOCKET = "ssh.sock.XXXXXXXXXXXXXXXX"


def is_valid_name(name: str) -> bool:
    """Lima's naming rule alone (no length check): what `list` counts as an instance."""
    return isinstance(name, str) and name.isascii() and _NAME_RE.fullmatch(name) is not None


def validate_name(name: str) -> None:
    """Raise SpecError unless `name` is a valid instance name (Lima's rules, ASCII only,
    and short enough for the unix sockets placed in its directory)."""
    if not is_valid_name(name):
        raise SpecError(
            f"invalid instance name {name!r}: use letters, digits, and '.', '_' or '-' "
            "between them (it must start and end with a letter or digit)"
        )
    sock = paths.lima_home() / name / _LONGEST_SOCKET
    if len(str(sock).encode()) >= paths.UNIX_PATH_MAX:
        raise SpecError(
            f"instance name {name!r} is too long: the socket path {sock} would exceed "
            f"{paths.UNIX_PATH_MAX} bytes; use a shorter name or LIMA_HOME"
        )


def instance_dir_for(name: str) -> Path:
    """The directory of instance `name`, after `validate_name(name)`: always a direct child
    of LIMA_HOME, never LIMA_HOME itself, a hidden or `_` entry, or a path elsewhere."""
    validate_name(name)
    return paths.lima_home() / name


def guest_hostname(name: str) -> str:
    """`lima-NAME` with '.' and '_' as '-': the guest's host name and ssh.config's Host."""
    return "lima-" + name.replace(".", "-").replace("_", "-")
