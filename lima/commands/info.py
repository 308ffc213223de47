"""`limactl info`: what Lima 2.2's `limactl info` prints (pkg/limainfo.LimaInfo), as
indented JSON, through `--yq EXPR` (default `.`).

Called by `lima.cli` (lazily). Every key of Lima's struct, in its order, with this host's
values as limapy sees them, then limapy's own `limapyVersion`. Where Lima's value is a Go
nil slice (nothing found) it prints `null`, as Lima does.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import click

from lima import LIMA_COMPAT_VERSION, __version__, paths
from lima.schemas.arch import ARCHES, host_arch
from lima.shellenv import DEFAULT_BLOCK_LIST

# LimaInfo's JSON keys, in Lima's order (tests/component/test_info.py checks them).
LIMA_KEYS = ("version", "templates", "defaultTemplate", "limaHome", "vmTypes", "vmTypesEx",
             "guestAgents", "shellEnvBlock", "hostOS", "hostArch", "identityFile", "plugins",
             "libexecPaths", "sharePaths")


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


def _share_dir() -> Path:
    """limapy's counterpart of <PREFIX>/share/lima: the package directory, which holds
    `templates/` (as share/lima does) and the guest agent under `assets/`."""
    return Path(__file__).resolve().parents[1]


def _guest_agents() -> dict[str, dict[str, str]]:
    """The guest agent each guest arch gets: limapy's is one script (python3, or busybox sh
    on guests without python) for every arch, shipped on cidata."""
    agent = _share_dir() / "assets" / "cidata" / "util" / "lima-guestagent"
    return {arch: {"location": str(agent)} for arch in ARCHES} if agent.is_file() else {}


def _plugins() -> list[dict[str, str]] | None:
    """The `limactl-NAME` plugins limactl runs (lima.plugins); null when none, as Lima's
    nil slice."""
    from lima import plugins

    found = [{"name": p.name, "path": str(p.path),
              **({"description": p.description} if p.description else {})}
             for p in plugins.discover()]
    return found or None


def _libexec_paths() -> list[str] | None:
    """<PREFIX>/libexec/lima (and <PREFIX>/lib/lima) beside limactl, when they hold
    anything; null when none, as Lima's nil slice."""
    from lima import plugins

    return plugins.libexec_dirs(plugins.self_dirs()) or None


def info_doc() -> dict[str, Any]:
    """LimaInfo for this host, plus limapyVersion."""
    from lima import schemas

    default = schemas.resolve("template:default", name="default")
    return {
        "version": LIMA_COMPAT_VERSION,
        "templates": _templates(),
        "defaultTemplate": default.filled,
        "limaHome": str(paths.lima_home()),
        "vmTypes": ["qemu"],
        "vmTypesEx": {"qemu": {"location": "internal"}},  # built in, as Lima's registry says
        "guestAgents": _guest_agents(),
        # `limactl shell --preserve-env`'s built-in block list (LIMA_SHELLENV_BLOCK aside).
        "shellEnvBlock": list(DEFAULT_BLOCK_LIST),
        # Go's names: GOOS ("linux") and Lima's arch spelling.
        "hostOS": platform.system().lower(),
        "hostArch": host_arch(),
        "identityFile": str(paths.user_identity()),
        "plugins": _plugins(),
        "libexecPaths": _libexec_paths(),
        "sharePaths": [str(_share_dir())],
        "limapyVersion": __version__,
    }


@click.command()
@click.option("--yq", "yq", default=".", metavar="EXPR", show_default=True,
              help="Apply yq expression to output.")
def info(yq: str) -> None:
    """Show diagnostic information as JSON."""
    doc = info_doc()
    results: list[Any] = [doc]
    if yq != ".":
        from lima.yqeval import evaluate_all

        results = evaluate_all(yq, doc)
    from lima.jsoncolor import output_is_tty, pretty

    tty = output_is_tty()
    for r in results:
        # yq's JSON encoder with indent 4: scalars bare, strings without quotes; coloured
        # on a terminal.
        if isinstance(r, str):
            click.echo(r)
        else:
            click.echo(pretty(r) if tty else json.dumps(r, indent=4, ensure_ascii=False),
                       color=tty or None)
