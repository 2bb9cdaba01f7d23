"""What the diagram of a phase machine shows, planned from its guarded table.

The engine lifecycle and the raw engine adapter are each one
:class:`~..guarded.GuardedTable` whose control state is one phase, with no
modes and no ignored events to list: one planner draws both.  Which rows are
drawn is decided by the machine itself: a walk over :meth:`GuardedTable.step`
from the initial state over every event finds each (row, source phase) some
reachable state fires, so a row no state can fire is not drawn.

The request diagram's conventions (:mod:`.diagram_plan`): one node per
reachable phase, rows between the same two phases share one edge with one
label line each (``event [guard] / actions`` and the rule), the initial phase
marked, a phase nothing leaves drawn absorbing.  Forbidden events are not
drawn; the spec lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.walk import Walk
from dynamo_backend_protocol.model.guarded import GuardedTable, Row
from dynamo_backend_protocol.model.teach.diagram_plan import (
    NO_HIGHLIGHT,
    DiagramPlan,
    EdgeLine,
    Highlight,
    PlannedEdge,
    PlannedNode,
    StateId,
)

S = TypeVar("S", bound=Hashable)
E = TypeVar("E")
P = TypeVar("P", bound=StateId)

Use = tuple[Row[P, Any, Any, S, E], P]
"""A row and a source phase it fires from."""


def _unchanged(state: S) -> S:
    return state


def reachable_uses(
    table: GuardedTable[P, Any, Any, S, E],
    initial: S,
    events: Sequence[E],
    phases: Sequence[P],
    normalise: Callable[[S], S] = _unchanged,
    max_states: int = 10_000,
) -> tuple[set[P], list[Use[P, S, E]]]:
    """Every reachable phase, and every (row, source phase) some reachable state fires, in table order
    then ``phases`` order.  ``normalise`` maps a state to the one that stands for it, so a machine
    whose counters grow without bound still has a finite walk."""
    fired: dict[tuple[int, P], Use[P, S, E]] = {}

    def expand(state: S) -> Iterator[tuple[E, S, bool]]:
        for event in events:
            try:
                taken = table.step(state, event)
            except ProtocolViolation:
                continue
            source = table.phase(state)
            fired.setdefault((id(taken.row), source), (taken.row, source))
            yield event, normalise(taken.after), True

    walk: Walk[S, E] = Walk(initial)
    walk.run(expand, lambda state: True, max_states)
    order = {id(row): index for index, row in enumerate(table.rows)}
    uses = sorted(fired.values(), key=lambda use: (order[id(use[0])], phases.index(use[1])))
    return {table.phase(state) for state in walk.parent}, uses


def plan_phase_diagram(
    table: GuardedTable[P, Any, Any, S, E],
    *,
    name: str,
    title: str,
    initial: S,
    events: Sequence[E],
    phases: Sequence[P],
    ranks: Sequence[Sequence[P]],
    legend: tuple[str, ...],
    highlight: Highlight = NO_HIGHLIGHT,
    normalise: Callable[[S], S] = _unchanged,
) -> DiagramPlan:
    """The diagram of ``table`` as reached from ``initial``; ``ranks`` top to bottom, phases in a rank
    side by side (a rank no reachable phase is in is left out)."""
    reached, uses = reachable_uses(table, initial, events, phases, normalise)
    groups: dict[tuple[P, P], list[Use[P, S, E]]] = {}
    for row, source in uses:
        target = source if row.target is None else row.target
        groups.setdefault((source, target), []).append((row, source))
    edges = tuple(
        PlannedEdge(
            source,
            target,
            tuple(
                EdgeLine(row.label(), "", (row.rule,), False, row is highlight.row and source is highlight.source,
                         ((row, source),))
                for row, source in members
            ),
        )
        for (source, target), members in groups.items()
    )
    leaves = {edge.source for edge in edges}
    start = table.phase(initial)
    nodes = tuple(
        PlannedNode(state=phase, initial=phase is start, absorbing=phase not in leaves, decode_only=False,
                    ignores=(), highlighted=highlight.state is phase)
        for phase in phases
        if phase in reached
    )
    drawn_ranks: tuple[tuple[StateId, ...], ...] = tuple(
        tuple(phase for phase in group if phase in reached) for group in ranks if any(p in reached for p in group)
    )
    return DiagramPlan(name, title, nodes, edges, drawn_ranks, legend)
