"""The Driver protocol: the only way the reconciler touches the world.

`lima.controller.reconcile` calls `observe()` once per pass and `execute()` for the one
Action `decide()` picked. The QEMU driver (real VMs) and `lima.controller.fake.FakeDriver`
(component tests) implement it. Expected failures come back as `Outcome` values
(ok=False, permanent or with retry_after), never as exceptions.
"""

from __future__ import annotations

from typing import Protocol

from lima.states.actions import Action, Outcome
from lima.states.model import DesiredState, ObservedState

__all__ = ["Driver", "Outcome"]


class Driver(Protocol):
    def observe(self, name: str) -> ObservedState:
        """Gather the facts about instance `name` (files, pids, QMP, IID markers)."""
        ...

    def execute(self, name: str, action: Action, desired: DesiredState) -> Outcome:
        """Carry out `action` for `name`; block at most the action's budget (when it has one)."""
        ...
