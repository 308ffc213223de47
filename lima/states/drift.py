"""Drift: what applying a changed lima.yaml to an existing instance takes (DESIGN.md s. 4).

`classify(old_filled, new_filled)` compares the filled document the instance last applied
(lima.applied.json) with the new one and returns a Plan: one FieldChange per changed leaf
(a list counts as one leaf: `mounts`, `provision`), each with its drift class from the
field table (lima.schemas.fields), and the overall verdict. Called by `limactl apply`,
`apply --dry-run` and `limactl diff` (lima.commands.lifecycle, lima.commands.diff) before
anything is stopped. Pure: no disk, no processes, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lima.schemas.fields import FIELDS, UNSET, Derived, Drift, covering
from lima.schemas.sizes import parse_size

ROW_PATHS = frozenset(f.path for f in FIELDS)
# The verdict's order: a plan is as strong as its strongest change.
NOTHING = "nothing"
VERDICTS = (NOTHING, Drift.LIVE.value, Drift.RESTART.value, Drift.RECREATE.value,
            Drift.REJECT.value)


@dataclass(frozen=True)
class FieldChange:
    path: str  # "cpus", "ssh.localPort", "mounts" (a whole list)
    old: Any  # None: absent before
    new: Any  # None: absent now
    cls: Drift
    action: str  # what apply does about it, in words


@dataclass(frozen=True)
class Plan:
    changes: tuple[FieldChange, ...]

    @property
    def verdict(self) -> str:
        """nothing | live | restart | recreate | reject: the strongest class of any change."""
        return max((c.cls.value for c in self.changes), key=VERDICTS.index, default=NOTHING)

    def of(self, cls: Drift) -> tuple[FieldChange, ...]:
        return tuple(c for c in self.changes if c.cls is cls)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict,
                "changes": [{"path": c.path, "old": c.old, "new": c.new, "class": c.cls.value,
                             "action": c.action} for c in self.changes]}


def action_for(cls: Drift, *, restart: str = "auto", recreate: bool = False) -> str:
    """What apply does for a change of class `cls` under the given options."""
    if cls is Drift.LIVE:
        return "apply without a restart"
    if cls is Drift.RESTART:
        return ("record; applied at the next start (RestartRequired)" if restart == "stage"
                else "stop, then boot with the new spec")
    if cls is Drift.RECREATE:
        return ("delete the disk and create it again (data lost)" if recreate
                else "refused: needs --recreate (the disk is rebuilt, its data lost)")
    return "refused"


def classify(old_filled: dict[str, Any], new_filled: dict[str, Any], *,
             restart: str = "auto", recreate: bool = False) -> Plan:
    """The plan that takes an instance from `old_filled` to `new_filled`."""
    changes: list[FieldChange] = []
    for keys, old, new in _diff(old_filled, new_filled, ()):
        cls = _class(keys, old, new)
        changes.append(FieldChange(".".join(keys), old, new, cls,
                                   _action(keys, cls, old, new, restart, recreate)))
    return Plan(tuple(changes))


def _diff(old: Any, new: Any, keys: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict) and (keys == () or _has_finer_rows(keys)):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            out.extend(_diff(old.get(key), new.get(key), (*keys, str(key))))
        return out
    if old is None and _is_fixed_builtin(keys, new):
        return []  # filled by a newer limapy (a field Lima added): what the old one meant
    return [] if old == new else [(keys, old, new)]


def _is_fixed_builtin(keys: tuple[str, ...], value: Any) -> bool:
    """Whether `value` is the plain builtin default of exactly the row `keys` names."""
    row = covering(keys)
    if row is None or row.path != ".".join(keys):
        return False
    default = row.default
    if default is UNSET or isinstance(default, Derived) or callable(default):
        return False
    return bool(value == default and type(value) is type(default))


def _has_finer_rows(keys: tuple[str, ...]) -> bool:
    """`ssh` has a row per sub-field, so it is compared field by field; `env` has one row
    for the whole map, so it is one change."""
    path = ".".join(keys)
    return path not in ROW_PATHS and any(p.startswith(f"{path}.") for p in ROW_PATHS)


def _class(keys: tuple[str, ...], old: Any, new: Any) -> Drift:
    if keys == ("disk",):
        try:
            return Drift.REJECT if parse_size(new) < parse_size(old) else Drift.RESTART
        except (TypeError, ValueError):
            return Drift.RESTART
    row = covering(keys)
    # A field the table does not know (a newer lima.yaml): a restart is the safe guess.
    return row.drift if row is not None else Drift.RESTART


def _action(keys: tuple[str, ...], cls: Drift, old: Any, new: Any, restart: str,
            recreate: bool) -> str:
    if keys == ("disk",):
        if cls is Drift.REJECT:
            return "refused: a disk cannot shrink"
        return action_for(cls, restart=restart) + "; the disk grows at that boot"
    return action_for(cls, restart=restart, recreate=recreate)
