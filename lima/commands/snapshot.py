"""`limactl snapshot create|apply|delete|list INSTANCE --tag TAG`, as Lima 2.2's.

Reached through lima.cli (VERBS). Same subcommands, aliases (save, load, del, ls), flags,
table and "experimental" warning as Lima; the work is lima.drivers.snapshots: HMP
savevm/loadvm/delvm while the instance's qemu runs, `qemu-img snapshot` on its boot disk
while it does not. create, apply and delete hold the instance lock (lima.controller.lock),
so a snapshot never races a start or a stop; list reads without it (qemu-img -U).

Where limapy is stricter than Lima (docs/snapshots.md): a new tag must be a single
word that is not a number (QEMU matches numbers against snapshot ids too) and not taken
(Lima's savevm replaces it, its qemu-img adds a second one); apply and delete name a tag
that exists; a running guest is only restored from a snapshot that holds VM state, taken
in the same QEMU and VM shape (lima.drivers.snapshotshape records them at create); and
every failure exits 1 with QEMU's words (Lima exits 0 on HMP errors and prints only
"exit status 1" for qemu-img's). apply is refused on an instance a folder controller
manages unless the controller is paused.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lima.errors import LimaError

if TYPE_CHECKING:
    from lima.drivers.snapshots import Backend, Online

log = logging.getLogger(__name__)

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_TAG_HELP = "Name of the snapshot"


@click.group(context_settings=_CONTEXT)
def snapshot() -> None:
    """Manage instance snapshots

    \b
    List all snapshots of an instance:
      $ limactl snapshot list default
    Create a snapshot:
      $ limactl snapshot create default --tag snap1
    Apply (restore) a snapshot:
      $ limactl snapshot apply default --tag snap1
    Delete a snapshot:
      $ limactl snapshot delete default --tag snap1
    """


def _instance(names: tuple[str, ...]) -> tuple[str, Path]:
    """The instance named first, after Lima's warning (printed by every subcommand that
    runs, not for --help)."""
    from lima.drivers import store

    log.warning("`limactl snapshot` is experimental")
    if not names:
        raise click.UsageError(f"requires at least 1 arg(s), only received {len(names)}")
    if len(names) > 1:
        log.warning("ignoring the arguments after the instance name: %s", " ".join(names[1:]))
    return names[0], store.require_instance(names[0])


def _require_tag(tag: str) -> str:
    if tag == "":
        raise LimaError("expected tag")
    return tag


def check_new_tag(tag: str) -> None:
    """limapy's rules for a new tag (pure): one word of printable characters, not a number."""
    if any(c.isspace() or not c.isprintable() for c in tag):
        raise LimaError(f"invalid tag {tag!r}: a tag is one word (no spaces or control "
                        "characters)")
    if tag.isdigit():
        raise LimaError(f"invalid tag {tag!r}: a number would also match snapshot ids; "
                        "use a name with a letter in it")


def _locked(name: str, verb: str) -> AbstractContextManager[None]:
    from lima.controller.lock import instance_lock
    from lima.states.policy import STEP_BUDGET

    return instance_lock(name, timeout=2 * STEP_BUDGET, purpose=f"limactl snapshot {verb}")


def _find(backend: Backend, name: str, tag: str) -> int:
    """The VM state size of snapshot `tag` (LimaError when the instance has none)."""
    for snap in backend.snapshots():
        if snap.tag == tag:
            return snap.vm_state_size
    raise LimaError(f"snapshot {tag!r} not found in instance {name!r} (`limactl snapshot list "
                    f"{name}` shows its tags)")


@snapshot.command("create", context_settings=_CONTEXT)
@click.option("--tag", default="", help=_TAG_HELP)
@click.argument("names", nargs=-1, metavar="INSTANCE")
def create(tag: str, names: tuple[str, ...]) -> None:
    """Create (save) a snapshot"""
    from lima.drivers import snapshotshape
    from lima.drivers.snapshots import Online, open_backend

    name, inst_dir = _instance(names)
    _require_tag(tag)
    check_new_tag(tag)
    with _locked(name, "create"):
        _, backend = open_backend(inst_dir)
        if any(s.tag == tag for s in backend.snapshots()):
            raise LimaError(f"snapshot {tag!r} already exists in instance {name!r}; delete it "
                            f"first (`limactl snapshot delete {name} --tag {tag}`)")
        record = None
        if isinstance(backend, Online):
            record = snapshotshape.running_record(inst_dir, backend.qemu_version())
        backend.create(tag)
        # A record left by a snapshot deleted behind limactl's back goes too.
        snapshotshape.write(inst_dir, tag, record)


@snapshot.command("apply", context_settings=_CONTEXT)
@click.option("--tag", default="", help=_TAG_HELP)
@click.argument("names", nargs=-1, metavar="INSTANCE")
def apply(tag: str, names: tuple[str, ...]) -> None:
    """Apply (load) a snapshot"""
    from lima.controller import managed
    from lima.drivers.snapshots import Online, open_backend

    name, inst_dir = _instance(names)
    _require_tag(tag)
    managed.refuse_if_managed(
        name, undone_by="keep driving it from its file while its guest goes back to the "
        "snapshot (it would not know that what it provisioned may be gone)",
        advice=f"run `limactl controller pause {name}` first (and `limactl controller resume "
        f"{name}` when done)")
    with _locked(name, "apply"):
        running, backend = open_backend(inst_dir)
        vm_state = _find(backend, name, tag)
        if running and vm_state == 0:
            raise LimaError(f"snapshot {tag!r} of instance {name!r} holds no VM state (it was "
                            f"taken while the instance was stopped): stop the instance "
                            f"(`limactl stop {name}`) to apply it to the disk")
        if isinstance(backend, Online):
            _refuse_other_vm(name, inst_dir, tag, backend)
        backend.apply(tag)


def _refuse_other_vm(name: str, inst_dir: Path, tag: str, backend: Online) -> None:
    """loadvm into a QEMU or machine other than the snapshot's fails half-way and leaves the
    guest paused: refuse before, when the snapshot's record says so (none: as before)."""
    from lima.drivers import snapshotshape

    recorded = snapshotshape.read(inst_dir, tag)
    if recorded is None:
        return
    current = snapshotshape.running_record(inst_dir, backend.qemu_version())
    why = snapshotshape.difference(recorded, current) if current is not None else ""
    if why:
        raise LimaError(f"snapshot {tag!r} of instance {name!r} cannot be loaded into the "
                        f"running VM: {why}. Nothing was changed. Start the instance as it "
                        f"was when the snapshot was taken, or stop it (`limactl stop {name}`) "
                        f"to apply the snapshot's disk alone")


@snapshot.command("delete", context_settings=_CONTEXT)
@click.option("--tag", default="", help=_TAG_HELP)
@click.argument("names", nargs=-1, metavar="INSTANCE")
def delete(tag: str, names: tuple[str, ...]) -> None:
    """Delete (del) a snapshot"""
    from lima.drivers import snapshotshape
    from lima.drivers.snapshots import open_backend

    name, inst_dir = _instance(names)
    _require_tag(tag)
    with _locked(name, "delete"):
        _, backend = open_backend(inst_dir)
        _find(backend, name, tag)
        backend.delete(tag)
        snapshotshape.write(inst_dir, tag, None)


@snapshot.command("list", context_settings=_CONTEXT)
@click.option("--quiet", "-q", is_flag=True, help="Only show tags")
@click.argument("names", nargs=-1, metavar="INSTANCE")
def list_(quiet: bool, names: tuple[str, ...]) -> None:
    """List existing snapshots"""
    from lima.drivers.snapshots import open_backend

    _, inst_dir = _instance(names)
    _, backend = open_backend(inst_dir)
    if quiet:
        for snap in backend.snapshots():
            click.echo(snap.tag)
        return
    click.echo(backend.table(), nl=False)


snapshot.add_command(create, "save")
snapshot.add_command(apply, "load")
snapshot.add_command(delete, "del")
snapshot.add_command(list_, "ls")
