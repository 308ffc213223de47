"""The verbs of `limactl`, one module per group; `lima.cli` loads them lazily."""
