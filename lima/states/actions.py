"""What `decide()` returns: one small frozen Action for the driver, or Wait / Done / Stalled.

A Driver (lima.controller.driver) executes an Action and answers with an Outcome;
`lima.states.advance` turns that Outcome into the next Status. Actions carry only what the
driver cannot get from the DesiredState it is handed alongside (the IID, a time budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreateInstance:
    """Write the instance dir: lima.yaml, lima-version, basedisk, diffdisk (idempotent)."""


@dataclass(frozen=True)
class BuildCidata:
    """Build cidata.iso (and ssh.config) for IID `iid`; record `iid` as cidata_iid."""

    iid: str


@dataclass(frozen=True)
class StartHostAgent:
    """Start `limactl hostagent NAME`; return once ha.pid and qemu.pid are alive.

    `attach`: qemu still runs but its host agent is gone: start an agent that takes over
    that qemu (no reboot)."""

    iid: str
    attach: bool = False


@dataclass(frozen=True)
class WaitSSH:
    """Wait up to `budget` s for ssh login and /run/lima-ssh-ready == iid."""

    iid: str
    budget: float


@dataclass(frozen=True)
class WaitProvisioned:
    """Wait up to `budget` s for /run/lima-boot-done == iid; report provisioning errors."""

    iid: str
    budget: float


@dataclass(frozen=True)
class MarkRunning:
    """Check port forwards, mounts and readiness probes; data["errors"] lists what failed."""

    iid: str
    budget: float


@dataclass(frozen=True)
class StopInstance:
    """Shut the VM down (QMP system_powerdown via the host agent, kill after a deadline);
    `force`: kill at once. Also kills leftovers (a qemu without agent, or the reverse)."""

    force: bool


@dataclass(frozen=True)
class Abort:
    """Kill whatever runs of the instance: this boot attempt failed (`reason`)."""

    reason: str


@dataclass(frozen=True)
class SuspendInstance:
    """Save the running guest's whole state to suspend.state (the host agent: QMP stop,
    migrate to a temp file, rename once completed), then end qemu and the host agent.
    Also finishes a suspend that was interrupted (the state saved, qemu still there)."""


@dataclass(frozen=True)
class ResumeInstance:
    """Start the host agent with qemu's argv plus `-incoming defer`; it loads suspend.state,
    removes it and continues the guest (IID `iid`: the boot that was saved)."""

    iid: str


@dataclass(frozen=True)
class WaitResumed:
    """Wait up to `budget` s for the resumed guest: ssh login, clock set, markers of `iid`."""

    iid: str
    budget: float


@dataclass(frozen=True)
class DiscardSavedState:
    """Remove suspend.state and suspend.json, warning with `reason` (a cold boot follows)."""

    reason: str


@dataclass(frozen=True)
class DeleteInstance:
    """Remove the instance directory (the VM is already down)."""


Action = (
    CreateInstance
    | BuildCidata
    | StartHostAgent
    | WaitSSH
    | WaitProvisioned
    | MarkRunning
    | StopInstance
    | SuspendInstance
    | ResumeInstance
    | WaitResumed
    | DiscardSavedState
    | Abort
    | DeleteInstance
)


@dataclass(frozen=True)
class Wait:
    """Nothing to do before `until` (a backoff, or a step still in progress elsewhere)."""

    until: float
    reason: str


@dataclass(frozen=True)
class Done:
    """Observed matches desired."""

    reason: str = ""


@dataclass(frozen=True)
class Stalled:
    """A permanent failure: retrying cannot help; the user must act on `reason`."""

    reason: str


Decision = Action | Wait | Done | Stalled


@dataclass(frozen=True)
class Outcome:
    """What a Driver answers for one Action; expected failures are values, never raised.

    `permanent`: retrying cannot help (the instance becomes Stalled). `retry_after`: when a
    temporary failure is worth retrying (None: the standard step backoff). `data`: extra
    facts, e.g. {"errors": [...]} from WaitProvisioned/MarkRunning (-> Degraded).
    """

    ok: bool
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, **data: Any) -> Outcome:
        return cls(True, data=data)

    @classmethod
    def temporary(cls, error: str, retry_after: float | None = None) -> Outcome:
        return cls(False, error=error, retry_after=retry_after)

    @classmethod
    def failure(cls, error: str) -> Outcome:
        """A permanent failure."""
        return cls(False, error=error, permanent=True)
