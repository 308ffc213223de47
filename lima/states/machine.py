"""The `transitions` Machine over `Phase`, built from `phases.TRANSITIONS`.

`lima.states.advance` wraps the stored phase in a `Lifecycle`, fires triggers as steps
succeed or fail, and reads the new phase back. The Machine only guards legal moves: its one
callback records when the phase changed (in memory); it never does I/O. The `transitions`
package is untyped, so it stays behind this small typed wrapper.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData, Machine, MachineError

from lima.states.phases import TRANSITIONS, Phase


class IllegalTransition(RuntimeError):
    """A trigger fired in a phase the table does not allow: a bug in the caller."""

    def __init__(self, trigger: str, phase: Phase) -> None:
        allowed = sorted({t.trigger for t in TRANSITIONS if phase in t.sources})
        super().__init__(
            f"lifecycle: cannot '{trigger}' from phase '{phase.value}' "
            f"(allowed from there: {', '.join(allowed) or 'nothing'})"
        )
        self.trigger = trigger
        self.phase = phase


class _Model:
    """What the Machine mutates: the phase and when it was entered, nothing else."""

    state: Phase

    def __init__(self, since: float) -> None:
        self.since = since
        self.history: list[tuple[str, Phase, Phase]] = []

    def record(self, event: EventData) -> None:
        self.since = float(event.kwargs.get("now", self.since))
        source = Phase[event.transition.source] if event.transition else self.state
        name = event.event.name if event.event else "?"
        self.history.append((name, source, self.state))


_TABLE: list[dict[str, Any]] = [
    {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest} for t in TRANSITIONS
]


class Lifecycle:
    """One instance's phase, moved only along the table's edges."""

    def __init__(self, phase: Phase, since: float = 0.0) -> None:
        self._model = _Model(since)
        self._machine = Machine(
            model=self._model,
            states=Phase,
            transitions=_TABLE,
            initial=phase,
            auto_transitions=False,
            send_event=True,
            after_state_change="record",
        )

    @property
    def phase(self) -> Phase:
        return self._model.state

    @property
    def since(self) -> float:
        return self._model.since

    @property
    def history(self) -> list[tuple[str, Phase, Phase]]:
        """(trigger, from, to) of every move made through this object."""
        return list(self._model.history)

    def can(self, trigger: str) -> bool:
        return trigger in self._machine.get_triggers(self._model.state)

    def fire(self, trigger: str, now: float) -> Phase:
        """Move along `trigger`; IllegalTransition when the table has no such edge here."""
        if not self.can(trigger):
            raise IllegalTransition(trigger, self.phase)
        try:
            self._model.trigger(trigger, now=now)  # type: ignore[attr-defined]
        except MachineError as e:  # pragma: no cover - can() already checked
            raise IllegalTransition(trigger, self.phase) from e
        return self.phase

    def adopt(self, phase: Phase, now: float) -> None:
        """Take the phase the facts prove, when no edge explains the difference.

        This is not a move the controller makes: it corrects a stale memory (status.json
        lost, corrupt, or left by a process that died between two steps).
        """
        if phase != self.phase:
            old = self.phase
            self._machine.set_state(phase, model=self._model)
            self._model.since = now
            self._model.history.append(("adopt", old, phase))
