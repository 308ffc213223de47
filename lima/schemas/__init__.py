"""The spec layer: lima.yaml -> InstanceSpec. Pure: no processes, no sockets, no network."""
