"""The host agent: one daemon per running instance that owns its qemu (DESIGN.md section 6).

`limactl hostagent NAME` (lima.commands.hostagent) runs the daemon (`daemon.HostAgent`);
the controller's driver uses the client side (`client.start_hostagent`,
`client.stop_hostagent`) and asks the running agent over ha.sock (`api.hostagent_info`).

While it runs, the daemon keeps these facts in the instance directory:
- ha.pid: its PID (written atomically, removed at exit);
- ha.sock: HTTP over a unix socket, `GET /v1/info` -> its own view of the boot (ssh port,
  IID, phase, errors, whether the guest answers);
- ha.stdout.log: one JSON event per line in Lima's shape, `{"time": RFC3339, "status":
  {"running", "degraded", "exiting", "errors", "sshLocalPort"}}` (events.py);
- ha.stderr.log: its own logs as JSON lines; qemu.stdout.log / qemu.stderr.log: qemu's.
"""

from lima.drivers.hostagent.api import hostagent_info, serve_info
from lima.drivers.hostagent.client import (
    pick_ssh_port,
    reload_hostagent,
    start_hostagent,
    stop_hostagent,
)
from lima.drivers.hostagent.daemon import UNRESPONSIVE, Guest, HostAgent, PowerDown
from lima.drivers.hostagent.events import (
    QEMU_STDERR,
    QEMU_STDOUT,
    append_event,
    make_event,
    read_events,
    tail_lines,
)

__all__ = [
    "QEMU_STDERR",
    "QEMU_STDOUT",
    "UNRESPONSIVE",
    "Guest",
    "HostAgent",
    "PowerDown",
    "append_event",
    "hostagent_info",
    "make_event",
    "pick_ssh_port",
    "read_events",
    "reload_hostagent",
    "serve_info",
    "start_hostagent",
    "stop_hostagent",
    "tail_lines",
]
