"""One step of a phase machine (the engine lifecycle, the raw engine adapter), as a narration tells it.

Both machines are one :class:`~..guarded.GuardedTable`; what a narration says
of a step comes from the table's own step: the row that fired and its rule
(with the rule's summary), the phase before and after, the machine's
description of the state before and after, the actions.  A forbidden event
is told with the rule that forbids it.  How the sentences read is the
narration's (:mod:`.narrate_raw`, :mod:`.narrate_engine`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.guarded import GuardedTable
from dynamo_backend_protocol.model.rules import summary

S = TypeVar("S")
E = TypeVar("E")
P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True)
class PhaseStory(Generic[P, S]):
    """A step the machine took."""

    event: str
    before: S
    after: S
    source: P
    """The phase before."""
    target: P
    """The phase after (the source, when the row stays)."""
    said_before: str
    said_after: str
    """The machine's own description of the state before and after."""
    actions: tuple[str, ...]
    rule: str

    @property
    def moved(self) -> bool:
        return self.target != self.source

    @property
    def summary(self) -> str:
        return summary(self.rule)


@dataclass(frozen=True)
class PhaseRefusal(Generic[P]):
    """An event the machine forbids where it is: nothing moves."""

    event: str
    source: P
    said_before: str
    rule: str

    @property
    def summary(self) -> str:
        return summary(self.rule)


def tell_phase_step(table: GuardedTable[P, Any, Any, S, E], state: S, ev: E) -> PhaseStory[P, S] | PhaseRefusal[P]:
    """What firing ``ev`` in ``state`` does, by ``table``'s own step."""
    try:
        step = table.step(state, ev)
    except ProtocolViolation as violation:
        return PhaseRefusal(table.event_name(ev), table.phase(state), table.describe(state), violation.rule)
    actions = tuple(str(getattr(action, "value", action)) for action in step.actions)
    return PhaseStory(table.event_name(ev), state, step.after, table.phase(state), table.phase(step.after),
                      table.describe(state), table.describe(step.after), actions, step.rule)
