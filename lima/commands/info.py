"""`limactl info`: version, LIMA_HOME, templates and the filled default template, as JSON.

Called by `lima.cli` (lazily). The keys are Lima's (`limactl info` of Lima 2.x) where we
have an equivalent, plus `limapyVersion`.
"""

from __future__ import annotations

import json
import platform

import click

from lima import LIMA_COMPAT_VERSION, __version__, paths
from lima.schemas.arch import host_arch
from lima.shellenv import DEFAULT_BLOCK_LIST


def _templates() -> list[dict[str, str]]:
    """Templates visible to `template:NAME`, first in search order wins."""
    from lima.schemas.templates import template_dirs

    found: dict[str, str] = {}
    for d in template_dirs():
        for f in sorted(d.rglob("*.yaml")) if d.is_dir() else []:
            rel = f.relative_to(d).with_suffix("").as_posix()
            if not any(part.startswith("_") for part in rel.split("/")):
                found.setdefault(rel, str(f))
    return [{"name": n, "location": loc} for n, loc in sorted(found.items())]


@click.command()
def info() -> None:
    """Show diagnostic information as JSON."""
    from lima import schemas

    default = schemas.resolve("template:default", name="default")
    doc = {
        "version": LIMA_COMPAT_VERSION,
        "limapyVersion": __version__,
        "templates": _templates(),
        "defaultTemplate": default.filled,
        "limaHome": str(paths.lima_home()),
        "vmTypes": ["qemu"],
        "vmTypesEx": {"qemu": {}},  # built in: no external driver location, as Lima's qemu
        # `limactl shell --preserve-env`'s built-in block list (LIMA_SHELLENV_BLOCK aside).
        "shellEnvBlock": list(DEFAULT_BLOCK_LIST),
        "identityFile": str(paths.user_identity()),
        # Lima prints Go's names: GOOS ("linux", "darwin") and its arch spelling.
        "hostOS": platform.system().lower(),
        "hostArch": host_arch(),
    }
    click.echo(json.dumps(doc))
