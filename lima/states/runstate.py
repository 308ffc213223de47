"""The run state a lima.yaml asks for (`x-limapy.runState`), and the step toward it. Pure.

Called by the folder controller's planner (lima.controller.planner), `limactl apply`
(lima.commands.lifecycle) and the plan it prints (lima.commands.diff). `suspended` is
reached through a running guest (an instance that is not up yet boots first, then it is
suspended) and only where QEMU can save the guest (`suspend_refusal`); `stopped` and
`running` are desired states decide() drives to directly.
"""

from __future__ import annotations

from lima.schemas.spec import InstanceSpec
from lima.states.model import RunState
from lima.states.phases import Phase

FIELD = "x-limapy.runState"
# The condition status.json carries while the file's run state cannot be reached.
RUN_STATE_REFUSED = "RunStateRefused"
# QEMU cannot migrate vhost-user-fs devices (virtiofs) at all. 9p mounts are unmounted in the
# guest by the host agent first (lima.drivers.suspendmounts), and mounted again on resume.
UNMIGRATABLE_MOUNTS = ("virtiofs",)
# The phases from which a suspend is the next step (the guest runs, or is being saved).
_SUSPENDABLE = (Phase.RUNNING, Phase.SUSPENDING, Phase.SUSPENDED)


def wanted(spec: InstanceSpec) -> RunState:
    """The run state the file asks for (running when it says nothing)."""
    return RunState(spec.run_state or RunState.RUNNING.value)


def suspend_refusal(spec: InstanceSpec) -> str:
    """Why the instance of `spec` cannot be suspended ("" when it can)."""
    if spec.mounts and spec.mount_type in UNMIGRATABLE_MOUNTS:
        return (f"instance {spec.name!r} cannot be suspended: QEMU cannot save a guest with "
                f"{spec.mount_type} mounts (its vhost-user-fs devices cannot be migrated); "
                f"use mountType 9p or reverse-sshfs, or `limactl stop {spec.name}`")
    return ""


def next_run_state(want: RunState, phase: Phase | None) -> RunState:
    """The desired state of the next passes: `suspended` for an instance that does not run
    yet (absent, stopped, booting) is `running` first, as nothing else has a state to save."""
    if want is RunState.SUSPENDED and phase not in _SUSPENDABLE:
        return RunState.RUNNING
    return want
