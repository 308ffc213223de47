"""Facts about the guest every driver module must agree on, written down once.

The QEMU argv (`lima.drivers.qemu`), the seed (`lima.drivers.cloudconfig`,
`lima.drivers.cidata`) and the readiness checks (`lima.drivers.ssh`) import them from here;
tests/unit/test_facts_once.py fails when one of these values is written anywhere else in
lima/. Shell assets (lima/assets/cidata/boot.sh, lima/assets/tiny/init) get them through
the LIMA_CIDATA_* environment where they can, and otherwise spell them out with a comment.
"""

from __future__ import annotations

# QEMU's user-mode network as Lima sets it up: every instance has its own private
# 192.168.5.0/24, with the host as the gateway and QEMU's DNS forwarder beside it.
SLIRP_NETWORK = "192.168.5.0/24"
SLIRP_PREFIX_LENGTH = 24
SLIRP_GATEWAY = "192.168.5.2"
SLIRP_DNS = "192.168.5.3"
SLIRP_IP_ADDRESS = "192.168.5.15"
# hostResolver: the address the guest asks (DNS over TCP) and QEMU's guestfwd hands to the
# host agent's DNS server (lima.drivers.hostagent.dns says why it is not SLIRP_DNS).
HOST_RESOLVER_ADDRESS = "192.168.5.4"

# The virtio serial port the guest agent listens on (Lima's name).
GUEST_AGENT_PORT = "io.lima-vm.guest_agent.0"

# The line cloud-init's bootcmd writes to the console once the guest's network is up, which
# the host agent reads in serial.log (lima.drivers.serialwatch) to probe ssh at once.
NETWORK_UP_LINE = "lima-network-up"

# Markers boot.sh writes into the guest, each holding the IID of the boot that
# wrote it (so a marker left by an earlier boot never counts): ssh is ready, provisioning
# is done, provisioning failed (then followed by one "<script>: exit N" line per failure).
SSH_READY_MARKER = "/run/lima-ssh-ready"
BOOT_DONE_MARKER = "/run/lima-boot-done"
BOOT_FAILED_MARKER = "/run/lima-boot-failed"
