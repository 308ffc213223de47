"""`limactl disk create|list|delete|unlock|resize|import`: Lima disks, as Lima's `disk` verbs.

Same flags, table, JSON lines, messages (logged at INFO/WARNING on stderr) and refusals as
Lima: a disk in use is not deleted without `--force`, a disk referenced by a stopped
instance is skipped, a running instance's disk is neither unlocked nor resized, and a disk
never shrinks. The disk store itself is lima.drivers.disks; cli.py registers the verb.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from lima.drivers import disks
from lima.errors import LimaError, NotFoundError
from lima.units import bytes_size

log = logging.getLogger(__name__)


def _size(text: str) -> int:
    from lima.schemas.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise LimaError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def disk() -> None:
    """Lima disk management.

    \b
    Create a disk:   limactl disk create DISK --size SIZE [--format qcow2]
    List disks:      limactl disk ls
    Delete a disk:   limactl disk delete DISK
    Resize a disk:   limactl disk resize DISK --size SIZE
    Import a disk:   limactl disk import DISK FILE
    """


@disk.command("create")
@click.option("--size", required=True, help="Configure the disk size")
@click.option("--format", "fmt", default="qcow2", show_default=True,
              help="Specify the disk format")
@click.argument("name")
def create(size: str, fmt: str, name: str) -> None:
    """Create a Lima disk."""
    nbytes = _size(size)
    if fmt not in disks.FORMATS:
        raise LimaError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    directory = disks.disk_dir(name)
    if directory.exists() or directory.is_symlink():
        raise LimaError(f"disk `{name}` already exists (`{directory}`)")
    log.info("Creating %s disk `%s` with size %s", fmt, name, bytes_size(nbytes))
    disks.create_disk(name, nbytes, fmt)


def table(rows: list[list[str]]) -> str:
    """Go's tabwriter as Lima sets it up (min width 4, padding 4): every column but the
    last is as wide as its widest cell plus 4."""
    if not rows:
        return ""
    widths = [max(4, max(len(r[i]) for r in rows) + 4) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


@disk.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSONify output")
@click.argument("names", nargs=-1)
def list_(as_json: bool, names: tuple[str, ...]) -> None:
    """List existing Lima disks."""
    every = disks.disk_names()
    chosen: list[str] = []
    if names:
        for name in names:
            if name in every:
                chosen.append(name)
            else:
                log.warning("No disk matching %s found.", name)
    else:
        chosen = every
    found: list[disks.Disk] = []
    for name in chosen:
        try:
            found.append(disks.inspect_disk(name))
        except LimaError as exc:
            log.error("disk `%s` does not exist? (%s)", name, exc)
    if as_json:
        for d in found:
            click.echo(d.json_line())
        return
    if not chosen:
        log.warning("No disk found. Run `limactl disk create DISK --size SIZE` to create a "
                    "disk.")
    rows = [["NAME", "SIZE", "FORMAT", "DIR", "IN-USE-BY"]]
    rows += [[d.name, bytes_size(d.size), d.format, str(d.dir), d.instance] for d in found]
    click.echo(table(rows), nl=False)


disk.add_command(list_, "ls")


def _referencing_instances(name: str) -> list[str]:
    """Instances whose lima.yaml lists the disk in additionalDisks."""
    from lima.drivers import store
    from lima.schemas import load_instance

    out = []
    for inst in store.instance_names():
        try:
            spec = load_instance(inst).spec
        except LimaError:
            continue
        if any(d.name == name for d in spec.additional_disks):
            out.append(inst)
    return out


@disk.command("delete")
@click.option("-f", "--force", is_flag=True, help="Force delete")
@click.argument("names", nargs=-1, required=True)
def delete(force: bool, names: tuple[str, ...]) -> None:
    """Delete one or more Lima disks."""
    import shutil

    for name in names:
        try:
            d = disks.inspect_disk(name)
        except NotFoundError:
            log.warning("Ignoring non-existent disk `%s`", name)
            continue
        if not force:
            if d.instance:
                raise LimaError(f"cannot delete disk `{d.name}` in use by instance "
                                f"`{d.instance}`")
            refs = _referencing_instances(name)
            if refs:
                listed = ", ".join(f"`{r}`" for r in refs)
                log.warning("Skipping deleting disk `%s`, disk is referenced by one or more "
                            "non-running instances: [%s]", name, listed)
                log.warning("To delete anyway, run `limactl disk delete --force %s`", name)
                continue
        try:
            shutil.rmtree(d.dir)
        except OSError as exc:
            raise LimaError(f"failed to delete disk `{name}`: failed to remove `{d.dir}`: "
                            f"{exc}") from exc
        log.info("Deleted `%s` (`%s`)", name, d.dir)


disk.add_command(delete, "remove")
disk.add_command(delete, "rm")


@disk.command("unlock")
@click.argument("names", nargs=-1, required=True)
def unlock(names: tuple[str, ...]) -> None:
    """Unlock one or more Lima disks (after a forced stop left a lock behind)."""
    for name in names:
        try:
            d = disks.inspect_disk(name)
        except NotFoundError:
            log.warning("Ignoring non-existent disk `%s`", name)
            continue
        if not d.instance:
            log.warning("Ignoring unlocked disk `%s`", name)
            continue
        if disks.instance_running(d.instance):
            log.warning("Cannot unlock disk `%s` used by running instance `%s`", name,
                        d.instance)
            continue
        disks.unlock(d)
        log.info("Unlocked disk `%s` (`%s`)", name, d.dir)


@disk.command("resize")
@click.option("--size", required=True, help="Disk size")
@click.argument("name")
def resize(size: str, name: str) -> None:
    """Resize an existing Lima disk (grow only)."""
    nbytes = _size(size)
    try:
        d = disks.inspect_disk(name)
    except NotFoundError:
        raise LimaError(f"disk `{name}` does not exists") from None
    if nbytes < d.size:
        raise LimaError(f"specified size `{bytes_size(nbytes)}` is less than the current "
                        f"disk size `{bytes_size(d.size)}`. Disk shrinking is currently "
                        "unavailable")
    if d.instance and disks.instance_running(d.instance):
        raise LimaError(f"cannot resize disk `{name}` used by running instance "
                        f"`{d.instance}`. Please stop the VM instance")
    disks.resize_disk(d, nbytes)
    log.info("Resized disk `%s` (`%s`)", name, d.dir)


@disk.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=True, path_type=Path))
def import_(name: str, file: Path) -> None:
    """Import an existing disk to Lima"""
    d = disks.import_disk(name, file)
    log.info("Imported %s with size %s", d.name, bytes_size(d.size))
