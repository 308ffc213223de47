"""The plan of an apply: what changed between an instance's applied spec and a new file.

`limactl diff NAME FILE` (this module's verb) and `limactl apply --dry-run` print it;
`limactl apply` (lima.commands.lifecycle) acts on it. The old side is lima.applied.json
(lima.drivers.applied); an instance made before that file existed falls back to its
stored lima.yaml and the generation in status.json. The classification itself is pure
(lima.states.drift.classify).

JSON (`--format json`), one document:
  {"changed": true,
   "instances": [{"name": "dev", "exists": true, "running": true, "changed": true,
                  "verdict": "restart",   # nothing|create|live|restart|recreate|reject
                  "changes": [{"path": "cpus", "old": 1, "new": 2, "class": "restart",
                               "action": "stop, then boot with the new spec"}]}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from lima import paths

if TYPE_CHECKING:
    from lima.schemas import Resolved
    from lima.states.drift import Plan

# Exit codes of --dry-run and diff: nothing would change / something would.
SAME, DIFFERENT = 0, 2


@dataclass(frozen=True)
class InstancePlan:
    name: str
    exists: bool
    running: bool
    changed: bool  # the user's intent differs from what the instance applied
    plan: Plan | None  # None: a new instance
    # The generation to drive the instance with when unchanged (an instance made before
    # lima.applied.json keeps the one its status.json holds, so nothing looks changed).
    generation: str
    want: str = "running"  # the run state the file asks for (x-limapy.runState)
    now: str = ""  # the instance's run state (running, stopped, suspended; "" otherwise)

    @property
    def verdict(self) -> str:
        if not self.exists:
            return "create"
        if self.plan is None or not self.changed:
            return "nothing"
        # A changed intent whose filled document is the same (a comment, a default spelled
        # out) still has to be recorded: live.
        return self.plan.verdict if self.plan.changes else "live"

    def to_json(self) -> dict[str, Any]:
        plan = self.plan.to_json()["changes"] if self.plan is not None and self.changed else []
        return {"name": self.name, "exists": self.exists, "running": self.running,
                "changed": self.changed or not self.exists, "verdict": self.verdict,
                "changes": plan}


def plan_instance(name: str, new: Resolved, *, restart: str = "auto",
                  recreate: bool = False) -> InstancePlan:
    """Compare `new` with what instance `name` applied. A damaged stored lima.yaml is a
    LimaError (lifecycle.load_stored): nothing may be planned over it."""
    from lima import schemas
    from lima.commands.lifecycle import load_stored
    from lima.controller.status_store import StatusStore
    from lima.drivers import procs
    from lima.drivers.applied import read_applied
    from lima.states.drift import classify

    inst = paths.instance_dir(name)
    if not (inst / paths.LIMA_YAML).is_file():
        return InstancePlan(name, False, False, True, None, new.generation,
                            new.spec.run_state)
    stored = load_stored(name)
    running = procs.qemu_pid(inst) is not None
    applied = read_applied(inst)
    if applied is not None:
        old_gen, old_filled = applied.generation, applied.filled
        changed = old_gen != new.generation
    else:
        status = StatusStore().load(name)
        old_filled = stored.filled
        old_gen = status.generation if status is not None and status.generation else ""
        if not old_gen:
            changed = stored.generation != new.generation  # created, never booted
        else:
            # status.json holds a hash of the filled spec (before the intent generation)
            # or, from a driver that writes no applied file, the intent's.
            changed = old_gen not in (schemas.generation(new.filled), new.generation)
    plan = classify(old_filled, new.filled, restart=restart, recreate=recreate)
    generation = new.generation if changed or not old_gen else old_gen
    want, now = new.spec.run_state, ""
    if _says_run_state(new.filled, old_filled):
        now = _run_state_now(name)
    if want != now and now:
        plan = _with_run_state(plan, now, want)
        changed = True
    return InstancePlan(name, True, running, changed, plan, generation, want, now)


def _says_run_state(*filled: dict[str, Any] | None) -> bool:
    """Whether a file on either side says `x-limapy.runState` (without it, apply's plan
    shows spec changes only, as before the field existed)."""
    return any(isinstance(f, dict) and isinstance(f.get("x-limapy"), dict)
               and f["x-limapy"].get("runState") is not None for f in filled)


def _run_state_now(name: str) -> str:
    from lima.drivers import store

    status = store.inspect_processes(name, paths.instance_dir(name)).status
    return {store.STATUS_RUNNING: "running", store.STATUS_STOPPED: "stopped",
            store.STATUS_SUSPENDED: "suspended"}.get(status, "")


_RUN_STATE_ACTIONS = {("running", "suspended"): "suspend (no restart)",
                      ("suspended", "running"): "resume (no restart)",
                      ("stopped", "running"): "start",
                      ("stopped", "suspended"): "start, then suspend"}


def _with_run_state(plan: Plan, now: str, want: str) -> Plan:
    """`plan` with the run state's change in it: live (no restart, no recreate)."""
    from lima.schemas.fields import Drift
    from lima.states.drift import FieldChange, Plan
    from lima.states.runstate import FIELD

    action = _RUN_STATE_ACTIONS.get((now, want), "stop")
    rest = tuple(c for c in plan.changes if c.path.split(".")[0] != FIELD.split(".")[0])
    return Plan((*rest, FieldChange(FIELD, now, want, Drift.LIVE, action)))


def _short(value: Any, width: int = 36) -> str:
    text = "-" if value is None else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def render(plans: list[InstancePlan], fmt: str) -> str:
    """The plans as a table (one row per changed field) or one JSON document."""
    if fmt == "json":
        return json.dumps({"changed": any(would_change(p) for p in plans),
                           "instances": [p.to_json() for p in plans]}, default=str)
    lines = []
    for p in plans:
        if not p.exists:
            then = {"stopped": "", "suspended": ", started and suspended"}.get(
                p.want, " and started")
            lines.append(f"{p.name}: would be created{then}")
            continue
        if not p.changed:
            state = ("unchanged" if p.running or p.want != "running"
                     else "unchanged; stopped: apply would start it")
            lines.append(f"{p.name}: {state}")
            continue
        assert p.plan is not None
        lines.append(f"{p.name}: {p.verdict}")
        rows = [("PATH", "OLD", "NEW", "CLASS", "ACTION")]
        rows += [(c.path, _short(c.old), _short(c.new), c.cls.value, c.action)
                 for c in p.plan.changes]
        if len(rows) == 1:
            rows.append(("-", "-", "-", "live", "record the new file (same filled spec)"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            cells = [r[i].ljust(widths[i]) for i in range(4)]
            lines.append("  " + "  ".join([*cells, r[4]]))
    return "\n".join(lines)


def would_change(p: InstancePlan) -> bool:
    if p.want != "running" and p.now:
        return not p.exists or p.changed or p.now != p.want
    return not p.exists or p.changed or not p.running


@click.command()
@click.argument("name")
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one document, shape in `limactl diff --help`.")
def diff(name: str, file: str, fmt: str) -> int:
    """Show what applying FILE to instance NAME would change; change nothing.

    One row per changed field: path, old and new value, drift class (live, restart,
    recreate, reject) and what apply would do. Exit 0: nothing would change; 2: something
    would; 1: an error (FILE invalid, NAME damaged).

    \b
    --format json prints one document:
      {"changed": bool,
       "instances": [{"name", "exists", "running", "changed",
                      "verdict": nothing|create|live|restart|recreate|reject,
                      "changes": [{"path", "old", "new", "class", "action"}]}]}
    """
    from lima import schemas
    from lima.names import validate_name
    from lima.schemas.templates import read_stdin

    validate_name(name)
    stdin = read_stdin() if file == "-" else None
    new = schemas.resolve(file, name=name, stdin=stdin)
    plan = plan_instance(name, new)
    click.echo(render([plan], fmt))
    return DIFFERENT if would_change(plan) else SAME
