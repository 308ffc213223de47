"""The lifecycle as data: the `Phase` Enum and the module-level `TRANSITIONS` table.

`lima.states.machine` builds its `transitions` Machine from this table, `lima.states.advance`
fires its triggers, and `render_mermaid()` turns it into the diagram in docs/lifecycle.md
(a unit test keeps that file in step with this table). Nothing here does I/O.

The happy path is DESIGN.md section 3:
absent -create-> created -build_cidata-> cidata_built -boot-> booting -ssh_up-> ssh_ready
-provisioned-> provisioned -ready-> running; stop/halted bring a live VM down; fail and delete
reach failed/absent. Recovery edges, each with the fact that justifies it:
- `crashed`: qemu is gone while we thought the VM was up (it died, or was killed): the truth
  is "stopped", and the attempt counts toward the crash-loop backoff.
- `create` from failed: a create that failed (temporarily) is tried again.
- `build_cidata` from failed and cidata_built: every boot gets a fresh IID, also after
  a failed attempt, or when an unused seed is stale.
- `fail` from any phase: a step failed for good or the attempt was aborted (deadline passed,
  host agent died); what to do next is data (retries, next attempt, Stalled).
Suspend and resume (issue 11): suspend/saved take a live VM to `suspended` (its whole state
in suspend.state, qemu gone); resume/resumed bring it back without a boot; discard drops a
saved state that no longer matches (then a cold boot follows from `stopped`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where an instance is in its lifecycle; the value is what status.json stores."""

    ABSENT = "absent"
    CREATED = "created"
    CIDATA_BUILT = "cidata_built"
    BOOTING = "booting"
    SSH_READY = "ssh_ready"
    PROVISIONED = "provisioned"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"
    FAILED = "failed"


# Phases in which a qemu process of ours is expected to be alive.
LIVE_PHASES: frozenset[Phase] = frozenset(
    {Phase.BOOTING, Phase.SSH_READY, Phase.PROVISIONED, Phase.RUNNING, Phase.STOPPING,
     Phase.SUSPENDING, Phase.RESUMING}
)


@dataclass(frozen=True)
class Transition:
    """One edge family: `trigger` moves any phase in `sources` to `dest`."""

    trigger: str
    sources: tuple[Phase, ...]
    dest: Phase
    why: str


P = Phase
TRANSITIONS: tuple[Transition, ...] = (
    Transition("create", (P.ABSENT, P.FAILED), P.CREATED,
               "instance dir, lima.yaml, lima-version, basedisk and diffdisk written"),
    Transition("build_cidata", (P.CREATED, P.STOPPED, P.FAILED, P.CIDATA_BUILT), P.CIDATA_BUILT,
               "cidata.iso built for a new IID (lima.env LIMA_CIDATA_IID); ssh.config written"),
    Transition("boot", (P.CIDATA_BUILT,), P.BOOTING,
               "host agent started; it started qemu (ha.pid and qemu.pid alive)"),
    Transition("ssh_up", (P.BOOTING,), P.SSH_READY,
               "ssh login works and /run/lima-ssh-ready holds this IID"),
    Transition("provisioned", (P.SSH_READY,), P.PROVISIONED,
               "/run/lima-boot-done holds this IID"),
    Transition("ready", (P.PROVISIONED,), P.RUNNING,
               "port forwards and mounts up, probes pass (else Degraded)"),
    Transition("stop", (P.BOOTING, P.SSH_READY, P.PROVISIONED, P.RUNNING, P.RESUMING),
               P.STOPPING,
               "shutdown asked (QMP system_powerdown, or kill when forced)"),
    Transition("halted", (P.STOPPING,), P.STOPPED,
               "qemu and the host agent are gone"),
    Transition("crashed", (P.BOOTING, P.SSH_READY, P.PROVISIONED, P.RUNNING, P.SUSPENDING,
                           P.RESUMING), P.STOPPED,
               "qemu is gone although nobody stopped it; counts toward crash-loop backoff"),
    Transition("suspend", (P.BOOTING, P.SSH_READY, P.PROVISIONED, P.RUNNING), P.SUSPENDING,
               "the host agent saves the guest: QMP stop, migrate to suspend.state.tmp"),
    Transition("saved", (P.SUSPENDING,), P.SUSPENDED,
               "qemu and the host agent gone; suspend.state complete (renamed after QMP "
               "reported the migration completed) with suspend.json beside it"),
    Transition("resume", (P.SUSPENDED,), P.RESUMING,
               "host agent started qemu with -incoming defer; it loads suspend.state "
               "(the agent reports resuming)"),
    Transition("resumed", (P.RESUMING,), P.PROVISIONED,
               "state loaded and the guest continued (QMP cont); ssh login works and "
               "/run/lima-boot-done still holds this IID (read in the guest, or "
               "recorded in suspend.json when the state was saved: bootDone)"),
    Transition("discard", (P.SUSPENDED,), P.STOPPED,
               "the saved state no longer matches (spec, qemu or disks changed) or a stop "
               "-f dropped it: removed; a cold boot follows"),
    Transition("fail", tuple(Phase), P.FAILED,
               "a step failed for good, or the attempt was aborted (deadline, agent died)"),
    Transition("delete", (P.CREATED, P.CIDATA_BUILT, P.STOPPED, P.SUSPENDED, P.FAILED),
               P.ABSENT,
               "instance dir removed"),
)
del P

TRIGGERS: tuple[str, ...] = tuple(t.trigger for t in TRANSITIONS)


def transition(trigger: str) -> Transition:
    """The table row for `trigger`; KeyError for an unknown trigger."""
    for t in TRANSITIONS:
        if t.trigger == trigger:
            return t
    raise KeyError(trigger)


def legal(trigger: str, source: Phase) -> bool:
    """Whether `trigger` may fire in `source` (the table, without building a Machine)."""
    return any(t.trigger == trigger and source in t.sources for t in TRANSITIONS)


def triggers_between(source: Phase, dest: Phase) -> list[str]:
    """Every trigger that moves `source` to `dest`, in table order."""
    return [t.trigger for t in TRANSITIONS if source in t.sources and t.dest == dest]


def render_mermaid() -> str:
    """docs/lifecycle.md, generated from TRANSITIONS (tests fail when the file is stale)."""
    lines = [
        "# The instance lifecycle",
        "",
        "<!-- Generated from lima/states/phases.py by render_mermaid(); do not edit by hand.",
        "     Regenerate: python -c 'import lima.states.phases as p; "
        "print(p.render_mermaid(), end=\"\")' > docs/lifecycle.md -->",
        "",
        "Phases are rebuilt from facts on every pass (pids, QMP, the guest's IID markers);",
        "status.json keeps what facts cannot: retries, next attempt, last error, conditions.",
        "`fail` leaves every phase (drawn once, from `*`).",
        "",
        "The passes drive toward a desired run state: `running`, `stopped`, `suspended` or",
        "`absent`. The verbs name it (`start`, `stop`, `suspend`, `delete`); a lima.yaml that",
        "`limactl apply` or `limactl controller` manages names it in `x-limapy.runState`",
        "(running, stopped or suspended; see converge.md). `suspended` goes through `running`:",
        "an instance that does not run yet boots first, then it is saved.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {Phase.ABSENT.value}",
    ]
    for t in TRANSITIONS:
        if t.trigger == "fail":
            continue
        for s in t.sources:
            lines.append(f"    {s.value} --> {t.dest.value}: {t.trigger}")
    lines += [
        "    state \"* (any phase)\" as any",
        f"    any --> {Phase.FAILED.value}: fail",
        "```",
        "",
        "| trigger | from | to | fact / reason |",
        "|---|---|---|---|",
    ]
    for t in TRANSITIONS:
        src = "any" if t.trigger == "fail" else ", ".join(s.value for s in t.sources)
        lines.append(f"| {t.trigger} | {src} | {t.dest.value} | {t.why} |")
    lines.append("")
    return "\n".join(lines)
