"""Side effects: processes, QEMU, QMP, cidata, ssh, images, the host agent."""
