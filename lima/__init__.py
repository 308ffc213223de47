"""limapy: Lima (Linux virtual machines) as a declarative reconciler.

`__version__` is this package's version; `LIMA_COMPAT_VERSION` is the Lima release
whose lima.yaml, CLI and on-disk layout we follow. It is what `lima-version` files,
`limactl info` and `minimumLimaVersion` checks see.
"""

__version__ = "0.1.0"
LIMA_COMPAT_VERSION = "2.2.0"
