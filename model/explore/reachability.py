"""Which states and table rows a mode can actually reach.

The diagrams draw, for one mode, only the rows that mode can fire, and
simplify away guards that always hold there; the teaching tool lists the
events allowed in a state.  Both questions are answered here by a plain
breadth-first walk over :meth:`CompiledTable.step`, so they can never
disagree with the machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.request import MAX_STATES
from dynamo_backend_protocol.model.explore.walk import Walk
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import Transition
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ControlState, Event, Mode


@dataclass(frozen=True)
class ModeGraph:
    """Everything one mode can reach: its states and every step between them."""

    mode: Mode
    states: tuple[RequestState, ...]
    """In breadth-first discovery order, the initial state first."""
    steps: tuple[Step, ...]

    def rows(self) -> list[Transition]:
        """The table rows some reachable step fires, in table order of first use."""
        seen: dict[int, Transition] = {}
        for step in self.steps:
            seen.setdefault(id(step.row), step.row)
        return list(seen.values())

    def fires(self, row: Transition, source: ControlState) -> bool:
        """Whether ``row`` fires from ``source`` in this mode."""
        return any(step.row is row and step.before.control is source for step in self.steps)

    def guard_points(self, row: Transition, source: ControlState) -> list[tuple[RequestState, Event]]:
        """Every (state, event) at which this mode tests ``row``'s guard in
        ``source``: each reachable state there with each event of the row's kind."""
        return [
            (state, ev)
            for state in self.states
            if state.control is source
            for ev in ALL_EVENTS
            if ev.kind is row.trigger
        ]


def explore_graph(mode: Mode, table: CompiledTable = DEFAULT_TABLE) -> ModeGraph:
    """Breadth-first walk from the initial state over every allowed event."""
    steps: list[Step] = []

    def expand(state: RequestState) -> Iterator[tuple[Event, RequestState, bool]]:
        for step in allowed_steps(state, table):
            steps.append(step)
            yield step.event, step.after, True

    walk: Walk[RequestState, Event] = Walk(table.initial(mode))
    walk.run(expand, lambda state: True, MAX_STATES)
    return ModeGraph(mode, tuple(walk.parent), tuple(steps))


def allowed_steps(state: RequestState, table: CompiledTable = DEFAULT_TABLE) -> list[Step]:
    """The step each allowed event would take from ``state``, in event order."""
    steps: list[Step] = []
    for ev in ALL_EVENTS:
        try:
            steps.append(table.step(state, ev))
        except ProtocolViolation:
            continue
    return steps


def allowed_events(state: RequestState, table: CompiledTable = DEFAULT_TABLE) -> list[Event]:
    """Every event the protocol allows in ``state``, in the fixed event order."""
    return [step.event for step in allowed_steps(state, table)]


def explore_graphs(modes: Iterable[Mode] = tuple(Mode), table: CompiledTable = DEFAULT_TABLE) -> dict[Mode, ModeGraph]:
    return {mode: explore_graph(mode, table) for mode in modes}
