"""`limactl factory-reset [INSTANCE]`: the instance as it was before its first boot.

Reached through `lima.cli`. As in Lima (cmd/limactl/factory-reset.go): a missing instance
is reported and is not an error, a protected one is refused, a running one is killed
(through the reconciler's forced stop), then every file limactl made is removed except
lima.yaml, lima-version, protected and other `*.yaml` (lima.drivers.instcopy), under the
instance lock. The disks go, with everything the guest wrote: the next start prepares them
from the images again. limapy keeps files it did not make and says so.
"""

from __future__ import annotations

import logging

import click

from lima import paths
from lima.errors import LimaError

log = logging.getLogger(__name__)


def _refuse_managed(name: str) -> None:
    """A folder controller would boot the reset instance again at its next pass."""
    from lima.controller import managed

    managed.refuse_if_managed(
        name, undone_by="boot it again at once",
        advice=f"run `limactl controller pause {name}` first (and `limactl controller resume"
        f" {name}` when done)")


@click.command("factory-reset")
@click.argument("name", default="default", metavar="INSTANCE")
def factory_reset(name: str) -> None:
    """Factory reset an instance of Lima"""
    from lima.commands.lifecycle import stop_instance
    from lima.controller.lock import instance_lock
    from lima.drivers import instcopy, store

    inst = paths.instance_dir(name)
    if not (inst / paths.LIMA_YAML).is_file():
        log.info("Instance `%s` not found", name)
        return
    if store.is_protected(inst):
        raise LimaError("instance is protected to prohibit accidental factory-reset "
                        "(Hint: use `limactl unprotect`)")
    _refuse_managed(name)
    if store.inspect_processes(name, inst).status != store.STATUS_STOPPED:
        stop_instance(name, force=True)
    with instance_lock(name, timeout=60.0):
        if store.inspect_processes(name, inst).status == store.STATUS_RUNNING:
            raise LimaError(f"instance `{name}` was started again meanwhile; nothing was "
                            f"reset")
        removed, kept = instcopy.factory_reset(inst)
    for entry in removed:
        log.info("Removing `%s`", inst / entry)
    log.info("Instance `%s` has been factory reset", name)
    click.echo(
        f"Instance `{name}` has been factory reset: its disk, and everything the guest wrote"
        f" on it, is gone; lima.yaml is kept. The next `limactl start {name}` prepares a new"
        f" disk from its images (additional disks in {paths.lima_home() / '_disks'} are not"
        f" touched).", err=True)
    if kept:
        click.echo(f"Kept in {inst} (limactl did not create them): {', '.join(kept)}",
                   err=True)
