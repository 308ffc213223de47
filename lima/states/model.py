"""Desired, observed and recorded state: the three inputs of `decide()`. Frozen data only.

- `DesiredState` is built by the verbs (create/start/stop/delete/apply) and the controller
  from an InstanceSpec; it is the only thing they differ in.
- `ObservedState` is filled by a Driver's `observe()` from facts (files, pids, QMP, the
  guest's IID markers); nothing in it comes from memory.
- `Status` is what status.json keeps: what facts cannot tell (retries, next attempt, last
  error, conditions). `to_json()`/`from_json()` define the file's shape (see `Status`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lima.schemas.spec import InstanceSpec
from lima.states.phases import Phase

STATUS_VERSION = 1


class RunState(StrEnum):
    """What the user wants: the VM up, the instance kept but down, its whole state saved
    to disk (suspended: resumed in seconds by a later `running`), or no instance at all."""

    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    ABSENT = "absent"


@dataclass(frozen=True)
class DesiredState:
    """`spec` may be None when only stopping or deleting (nothing needs the spec then).
    `restart`: a running boot built from another generation is stopped and booted again
    with this spec (`apply --restart=auto`); without it such a boot is left running and
    RestartRequired says so. `force`: bring the VM down by killing it, no clean shutdown
    (`stop -f`). `document`: the lima.yaml text `spec` was resolved from, which
    CreateInstance stores when the instance does not exist yet (None: nothing to create)."""

    spec: InstanceSpec | None
    generation: str
    run_state: RunState
    restart: bool = False
    force: bool = False
    document: str | None = None

    def __post_init__(self) -> None:
        # Accept the plain strings the CLI has at hand ("running"); store the Enum.
        object.__setattr__(self, "run_state", RunState(self.run_state))


@dataclass(frozen=True)
class ObservedState:
    """Facts about one instance, gathered by `Driver.observe()` in one go.

    The IIDs are boot ids (lima.env's LIMA_CIDATA_IID, a new one per boot): `cidata_iid` is
    the one the current cidata.iso was built with (recorded next to it by BuildCidata),
    `ssh_ready_iid`/`boot_done_iid` are the contents of /run/lima-ssh-ready and
    /run/lima-boot-done in the guest (None when absent or unreadable).
    `markers_read` is False when the driver skipped the ssh round-trip; decide() then trusts
    the recorded phase for the same boot (qemu alive and cidata_iid == status.iid).

    Suspend and resume: `saved_generation` is the spec generation a complete saved state
    (suspend.state and suspend.json) was made against, None without one; `saved_stale` the
    reason it cannot be resumed whatever the spec (qemu binary or version, disks changed),
    "" when it can; `suspending`/`resuming`: the host agent says it saves or loads the state.
    """

    dir_exists: bool = False
    has_lima_yaml: bool = False
    disks_ready: bool = False
    cidata_iid: str | None = None
    hostagent_pid_alive: bool = False
    qemu_pid_alive: bool = False
    markers_read: bool = True
    ssh_ready_iid: str | None = None
    boot_done_iid: str | None = None
    # Errors the host agent reports once the boot runs: a failed provisioning script
    # (the guest's /run/lima-boot-failed), port forwards, mounts. Empty before running.
    agent_errors: tuple[str, ...] = ()
    guest_responsive: bool = True  # False: the host agent's heartbeat gets no answer
    saved_generation: str | None = None
    saved_stale: str = ""
    suspending: bool = False
    resuming: bool = False

    @property
    def created(self) -> bool:
        return self.dir_exists and self.has_lima_yaml and self.disks_ready

    @property
    def vm_alive(self) -> bool:
        """The guest runs: qemu is what matters; the host agent is its keeper."""
        return self.qemu_pid_alive

    @property
    def broken(self) -> bool:
        """Exactly one of qemu and its host agent is alive: neither can be trusted."""
        return self.qemu_pid_alive != self.hostagent_pid_alive


class CondStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"


# The condition types status.json carries (Kubernetes form).
READY = "Ready"
DEGRADED = "Degraded"
RESTART_REQUIRED = "RestartRequired"
STALLED = "Stalled"
CONDITION_TYPES = (READY, DEGRADED, RESTART_REQUIRED, STALLED)


@dataclass(frozen=True)
class Condition:
    type: str
    status: CondStatus
    reason: str
    message: str = ""
    last_transition_time: float = 0.0
    observed_generation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status.value,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": _iso(self.last_transition_time),
            "observedGeneration": self.observed_generation,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Condition:
        return cls(
            type=_str(d, "type"),
            status=CondStatus(_str(d, "status")),
            reason=_str(d, "reason"),
            message=_str(d, "message", ""),
            last_transition_time=_time(d.get("lastTransitionTime")) or 0.0,
            observed_generation=_opt_str(d, "observedGeneration"),
        )


@dataclass(frozen=True)
class Status:
    """What status.json holds. Shape (times are RFC 3339 UTC strings, or null):

    ```
    {"version": 1, "phase": "running", "since": "2025-01-01T00:00:00.000000Z",
     "iid": "iid-1735689600000", "generation": "<sha256>", "observedGeneration": "<sha256>",
     "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": "",
                     "lastTransitionTime": "...", "observedGeneration": "<sha256>"}, ...],
     "retries": 0, "restarts": 0, "nextAttempt": null, "lastError": null}
    ```

    `generation` is the spec generation the current (or last) boot was built from;
    `observedGeneration` the desired generation the controller last acted on. `retries`
    counts consecutive failures of the current step (reset when a step succeeds);
    `restarts` counts failed or crashed boots since the last stable run, the last new file
    version or the last request of a user (crash-loop backoff).
    """

    phase: Phase = Phase.ABSENT
    since: float = 0.0
    iid: str | None = None
    generation: str | None = None
    observed_generation: str | None = None
    conditions: tuple[Condition, ...] = ()
    retries: int = 0
    restarts: int = 0
    next_attempt: float | None = None
    last_error: str | None = None

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions:
            if c.type == type_:
                return c
        return None

    def is_true(self, type_: str) -> bool:
        c = self.condition(type_)
        return c is not None and c.status is CondStatus.TRUE

    @property
    def stalled(self) -> bool:
        return self.is_true(STALLED)

    def with_condition(
        self,
        type_: str,
        status: CondStatus,
        reason: str,
        message: str,
        now: float,
        generation: str | None,
    ) -> Status:
        """Set one condition; lastTransitionTime moves only when the status value changes."""
        old = self.condition(type_)
        when = old.last_transition_time if old is not None and old.status is status else now
        new = Condition(type_, status, reason, message, when, generation)
        rest = [c for c in self.conditions if c.type != type_]
        ordered = sorted([*rest, new], key=lambda c: _cond_order(c.type))
        return replace(self, conditions=tuple(ordered))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATUS_VERSION,
            "phase": self.phase.value,
            "since": _iso(self.since),
            "iid": self.iid,
            "generation": self.generation,
            "observedGeneration": self.observed_generation,
            "conditions": [c.to_json() for c in self.conditions],
            "retries": self.retries,
            "restarts": self.restarts,
            "nextAttempt": None if self.next_attempt is None else _iso(self.next_attempt),
            "lastError": self.last_error,
        }

    @classmethod
    def from_json(cls, d: Any) -> Status:
        """Parse status.json's dict; ValueError (or KeyError/TypeError) on a bad shape."""
        if not isinstance(d, dict):
            raise ValueError("status.json: not an object")
        if d.get("version") != STATUS_VERSION:
            raise ValueError(f"status.json: unknown version {d.get('version')!r}")
        conds = d.get("conditions") or []
        if not isinstance(conds, list):
            raise ValueError("status.json: conditions is not a list")
        return cls(
            phase=Phase(_str(d, "phase")),
            since=_time(d.get("since")) or 0.0,
            iid=_opt_str(d, "iid"),
            generation=_opt_str(d, "generation"),
            observed_generation=_opt_str(d, "observedGeneration"),
            conditions=tuple(Condition.from_json(c) for c in conds),
            retries=_int(d, "retries"),
            restarts=_int(d, "restarts"),
            next_attempt=_time(d.get("nextAttempt")),
            last_error=_opt_str(d, "lastError"),
        )


def _cond_order(type_: str) -> int:
    return CONDITION_TYPES.index(type_) if type_ in CONDITION_TYPES else len(CONDITION_TYPES)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(v: Any) -> float | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"status.json: bad time {v!r}")
    dt = datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return dt.timestamp()


def _str(d: dict[str, Any], key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"status.json: {key} must be a string")
    return v


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"status.json: {key} must be a string or null")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"status.json: {key} must be a non-negative integer")
    return v


__all__ = [
    "CONDITION_TYPES",
    "DEGRADED",
    "READY",
    "RESTART_REQUIRED",
    "STALLED",
    "CondStatus",
    "Condition",
    "DesiredState",
    "ObservedState",
    "RunState",
    "Status",
]
