"""`limactl prune [--keep-referred]`: empty the download cache.

Reached through `lima.cli` (verb "prune"). It also removes the hidden work directories
of killed creates and deletes (see `lima.drivers.store.remove_leftovers`). With
--keep-referred, entries that an instance's lima.yaml or a template (built-in or
`$LIMA_HOME/_templates`) still names (images, kernels, initrds, containerd archives,
firmware images) stay. Entries being downloaded right now are left alone. The build
cache (images built on this machine) is not touched: rebuilding one costs minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from lima import paths
from lima.drivers.images import download
from lima.errors import BusyError, LimaError
from lima.schemas.yamlload import load_yaml

log = logging.getLogger(__name__)


def locations(data: Any) -> Iterator[str]:
    """Every downloadable location a lima.yaml document names."""
    if not isinstance(data, dict):
        return

    def files(items: Any) -> Iterator[dict[str, Any]]:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                yield item

    for image in files(data.get("images")):
        yield from _location(image)
        for key in ("kernel", "initrd"):
            yield from _location(image.get(key))
    containerd = data.get("containerd")
    if isinstance(containerd, dict):
        for archive in files(containerd.get("archives")):
            yield from _location(archive)
    firmware = data.get("firmware")
    if isinstance(firmware, dict):
        for image in files(firmware.get("images")):
            yield from _location(image)


def _location(item: Any) -> Iterator[str]:
    if isinstance(item, dict) and isinstance(item.get("location"), str):
        yield item["location"]


def _instance_document(inst: Path) -> Any:
    """The filled document (defaults add containerd archives), else, for a lima.yaml that
    no longer resolves, the file as written: its images must not vanish either."""
    from lima.schemas import load_instance

    try:
        return load_instance(inst.name).filled
    except LimaError as exc:
        log.debug("%s: using lima.yaml as written (%s)", inst.name, exc)
    return _read_document(inst / paths.LIMA_YAML)


def _read_document(path: Path) -> Any:
    """A YAML file read as lima.yaml is read (YAML 1.2 scalars, limapy's limits)."""
    return load_yaml(path.read_bytes(), str(path)).data


def referred_keys() -> set[str]:
    """Cache keys of every remote location instances and templates refer to."""
    found: set[str] = set()
    home = paths.lima_home()
    instances = sorted(p for p in home.iterdir() if paths.is_instance_dir(p)) \
        if home.is_dir() else []
    for inst in instances:
        if not (inst / paths.LIMA_YAML).is_file():
            # As Lima: an instance being created or cloned has no lima.yaml yet, and
            # the download it is waiting for must not vanish under it.
            raise BusyError(f"cannot safely prune while instance {inst.name!r} is being "
                            "set up (it has no lima.yaml yet)")
        try:
            doc = _instance_document(inst)
        except (OSError, LimaError) as exc:
            log.warning("skipping instance %s: cannot read its lima.yaml: %s", inst.name, exc)
            continue
        found.update(locations(doc))
    for root in (paths.builtin_templates_dir(), paths.templates_dir()):
        for template in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
            try:
                found.update(locations(_read_document(template)))
            except (OSError, LimaError) as exc:
                log.warning("skipping template %s: %s", template, exc)
    return {download.cache_key(loc) for loc in found if not download.is_local(loc)}


def remove_leftovers() -> None:
    """The work directories of killed creates and deletes (`.creating-NAME@PID-*`): taking
    an instance's lock removes those whose maker is dead, which otherwise happens only
    when that instance is used again, and a failed create's name may never be."""
    from lima.controller.lock import instance_lock
    from lima.names import is_valid_name

    home = paths.lima_home()
    found = [paths.parse_work_dir(p.name) for p in home.iterdir()] if home.is_dir() else []
    for name in sorted({w[1] for w in found if w is not None and is_valid_name(w[1])}):
        try:
            with instance_lock(name, wait=False):
                pass
        except BusyError:
            log.info("%s is in use; its leftovers stay for now", name)


@click.command("prune")
@click.option("--keep-referred", is_flag=True,
              help="Keep objects that are referred by some instances or templates.")
def prune(keep_referred: bool) -> None:
    """Prune garbage objects (the download cache, and what killed commands left)."""
    remove_leftovers()
    keep = referred_keys() if keep_referred else set()
    log.info("Pruning %s", paths.download_dir())
    removed, busy = download.prune(keep)
    for key in busy:
        log.warning("kept %s: a download of it is in progress", key)
    kept = len(download.cache_entries()) - len(busy)
    log.info("removed %d cache entr%s, kept %d referred", len(removed),
             "y" if len(removed) == 1 else "ies", kept)
