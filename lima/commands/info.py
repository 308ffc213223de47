"""`limactl info`: version, LIMA_HOME, templates and the filled default template, as JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import click

from lima import LIMA_COMPAT_VERSION, __version__, paths


def _templates() -> list[dict[str, str]]:
    """Templates visible to `template:NAME`, first in search order wins."""
    import os

    dirs = [Path(p) for p in os.environ.get("LIMA_TEMPLATES_PATH", "").split(":") if p]
    dirs += [paths.templates_dir(), paths.builtin_templates_dir()]
    found: dict[str, str] = {}
    for d in dirs:
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
        "identityFile": str(paths.user_identity()),
        "hostOS": platform.system(),
        "hostArch": platform.machine(),
    }
    click.echo(json.dumps(doc))
