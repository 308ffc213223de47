"""`limactl restart [INSTANCE]`: stop, then start, through the reconciler.

Reached through `lima.cli`; `limactl clone --start` and `rename --start` use
`start_existing`. Nothing is started or stopped here: the stop is
lima.commands.lifecycle's `stop_instance` (a forced one kills the VM, as Lima's
`restart -f`), the start hands the stored lima.yaml to `converge` as `limactl start NAME`
does. As in Lima, an instance that is not running is warned about and started. Lima's
edit flags (limapy's addition to restart) are validated and written first, as
`limactl edit` writes them, so the instance comes back with them.
"""

from __future__ import annotations

import logging

import click

from lima.editflags import EditCommand, EditValues, edit_options
from lima.errors import LimaError
from lima.godur import DURATION

log = logging.getLogger(__name__)

START_TIMEOUT = 600.0


def start_existing(name: str, timeout: float = START_TIMEOUT) -> None:
    """`limactl start NAME` for an existing instance: its stored lima.yaml (with any change
    staged by `apply --restart=stage`) driven to running; its message shown once up."""
    from lima.commands.diff import plan_instance
    from lima.commands.lifecycle import converge, load_stored, show_message
    from lima.drivers import store

    store.require_instance(name)
    resolved = load_stored(name)
    gen = plan_instance(name, resolved).generation
    actions = converge(name, "running", spec=resolved.spec, generation=gen,
                       timeout=timeout, verb="start")
    if actions:
        show_message(name)
    click.echo(f"{name}: running")


@click.command(cls=EditCommand)
@click.argument("name", default="default", metavar="INSTANCE")
@click.option("--force", "-f", is_flag=True, help="Force stop and restart the instance")
@click.option("--timeout", type=DURATION, default=START_TIMEOUT, show_default=True,
              help="How long to wait for the instance to be running again (Go duration: "
                   "10m, 90s; a bare number is seconds).")
@click.option("--progress", is_flag=True,
              help="Show the guest's console (boot and provision scripts' output) while "
                   "waiting")
@edit_options(create=False)
def restart(name: str, force: bool, timeout: float, progress: bool,
            edit_flags: EditValues) -> None:
    """Restart a running instance"""
    from lima.commands.lifecycle import load_stored, stop_instance
    from lima.drivers import store

    inst = store.require_instance(name)
    load_stored(name)  # a damaged lima.yaml is refused before the VM is stopped
    if timeout <= 0:
        raise LimaError(f"--timeout must be positive, not {timeout:g}")
    if edit_flags:  # limapy's: `limactl edit NAME FLAGS` and the restart, in one verb
        from lima.commands.edit import stage_flags_for_restart

        stage_flags_for_restart(name, edit_flags)
    running = store.inspect_processes(name, inst).status != store.STATUS_STOPPED
    if force:
        log.info("Restarting the instance forcibly")
        stop_instance(name, force=True, timeout=timeout)
    elif running:
        stop_instance(name, force=False, timeout=timeout)
    else:
        log.warning("The instance is not running, continuing with the restart")
    from lima.commands.startextras import progress as showing_progress

    with showing_progress(inst, progress):
        start_existing(name, timeout)
