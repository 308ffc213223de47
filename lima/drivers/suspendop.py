"""The driver's side of suspend and resume: asking the host agent, waiting for the facts.

`lima.drivers.instance.QemuDriver` runs SuspendInstance and ResumeInstance through these.
Suspend signals the running host agent (SIGUSR1), which saves the guest's state
(lima.drivers.suspend), quits qemu and exits; resume starts a host agent whose qemu is the
saved argv plus `-incoming defer`, and which loads the state into it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lima import paths
from lima.drivers import disks, hostagent, procs, suspend, virtiofs
from lima.drivers.display import hostagent_args as display_hostagent_args
from lima.states.actions import Outcome
from lima.states.policy import STEP_BUDGET

if TYPE_CHECKING:
    from lima.schemas.spec import InstanceSpec

_POLL = 0.05
SUSPEND_FAILED = "suspend failed"


def _failures(inst: Path) -> int:
    from lima.drivers.instance import agent_progress

    return sum(e.startswith(SUSPEND_FAILED) for e in agent_progress(inst).errors)


def suspend_instance(inst: Path, *, budget: float = STEP_BUDGET) -> Outcome:
    """Ask the host agent to suspend and wait (up to `budget` s) until it and qemu are gone
    with the state saved. A kill of this process meanwhile changes nothing: the agent
    finishes the suspend on its own."""
    agent = procs.hostagent_pid(inst)
    if agent is None:
        if suspend.read_saved(inst) is not None and procs.qemu_pid(inst) is None:
            return Outcome.success()
        return Outcome.failure("the instance is not running: there is nothing to suspend")
    from lima.drivers.instance import agent_progress

    before = _failures(inst)
    if suspend.read_saved(inst) is None and not agent_progress(inst).suspending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGUSR1)
    deadline = time.monotonic() + budget
    while procs.hostagent_pid(inst) is not None or procs.qemu_pid(inst) is not None:
        if procs.hostagent_pid(inst) is None and suspend.read_saved(inst) is None:
            # Killed in the middle: the next pass attaches a new agent, which continues the
            # guest, then suspends it again.
            return Outcome.temporary("the host agent exited during the suspend",
                                     retry_after=0)
        if procs.hostagent_pid(inst) is not None and _failures(inst) > before:
            errors = [e for e in agent_progress(inst).errors if e.startswith(SUSPEND_FAILED)]
            if "QMP migrate: " in errors[-1] or suspend.MOUNT_REFUSED in errors[-1]:
                # QEMU refused to migrate this guest (a device that cannot be migrated), or
                # a 9p mount in use could not be unmounted: asking again cannot help.
                return Outcome.failure(errors[-1])
            return Outcome.temporary(errors[-1])
        if time.monotonic() > deadline:
            return Outcome.temporary("still suspending", retry_after=0)
        time.sleep(_POLL)
    if suspend.read_saved(inst) is None:
        from lima.drivers.instance import failure_context

        return Outcome.temporary(
            f"the host agent exited without saving the guest's state\n{failure_context(inst)}")
    return Outcome.success()


def resume_instance(name: str, inst: Path, spec: InstanceSpec, iid: str) -> Outcome:
    """Start the host agent that loads suspend.state; return once its qemu runs."""
    from lima.drivers.instance import STOP_TIMEOUT, _free_disks, await_qemu, resolver_args

    meta = suspend.read_saved(inst)
    if meta is None:
        return Outcome.temporary("there is no saved state to resume", retry_after=0)
    if procs.hostagent_pid(inst) is None:
        suspend.remove_temp(inst)
        for stale in (paths.HA_PID, paths.QEMU_PID):
            (inst / stale).unlink(missing_ok=True)
        argv = [str(a) for a in meta["qemuArgv"]] + ["-incoming", "defer"]
        data_disks = disks.attach_for_start([d.name for d in spec.additional_disks], inst)
        del data_disks  # the saved argv names them already; this locks them
        try:
            hostagent.start_hostagent(
                name, iid=str(meta.get("iid") or iid), ssh_port=int(meta["sshLocalPort"]),
                stop_timeout=STOP_TIMEOUT / 2, qemu_argv=argv,
                extra_args=("--ssh-user", spec.user.name, *resolver_args(spec),
                            *display_hostagent_args(spec)),
                virtiofsd=virtiofs.daemon_commands(spec, inst), resume=True,
            )
        except BaseException:
            if procs.qemu_pid(inst) is None:
                _free_disks(inst)
            raise
    failed = await_qemu(inst)
    return failed if failed is not None else Outcome.success()
