"""`limactl sudoers [--check [FILE]]`: Lima's helper for socket_vmnet on macOS.

Called by `lima.cli` (lazily). Lima builds this verb on every platform (its help is part
of the docs) but on anything but macOS the action only fails; limapy runs on Linux, so it
takes the same arguments and fails with Lima's message and exit code 1.
"""

from __future__ import annotations

import click

from lima.errors import LimaError

_HELP = """Generate the content of the /etc/sudoers.d/lima file

Lima writes a sudoers snippet for vmnet.framework support (socket_vmnet) on macOS. The
content would go to stdout, not to the file, and the command must not run as root.
Neither vmnet nor socket_vmnet exists on Linux, so here the command only reports that.

\b
Examples:
  limactl sudoers | sudo tee /etc/sudoers.d/lima
  limactl sudoers --check /etc/sudoers.d/lima
"""


@click.command(help=_HELP)
@click.argument("file", required=False, metavar="[SUDOERSFILE-TO-CHECK]")
@click.option("--check", is_flag=True,
              help="check that the sudoers file is up-to-date with the networks config")
def sudoers(file: str | None, check: bool) -> None:
    raise LimaError("sudoers command is only supported on macOS right now")
