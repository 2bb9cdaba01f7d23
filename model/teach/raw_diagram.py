"""What the diagram of the raw engine adapter shows, decided from its table.

The request diagram's conventions (:mod:`.diagram_plan`): one node per
reachable phase, rows between the same two phases share one edge with one
label line each (event [guard] / actions, and the rule), the initial phase
marked.  Events the table has no row for are forbidden and not drawn.
"""

from __future__ import annotations

from dataclasses import replace

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawEvent, RawPhase, RawState, RawTransition, raw_step
from dynamo_backend_protocol.model.teach.diagram_plan import (
    NO_HIGHLIGHT,
    DiagramPlan,
    EdgeLine,
    Highlight,
    PlannedEdge,
    PlannedNode,
    StateId,
)

RAW_RANKS: tuple[tuple[RawPhase, ...], ...] = ((RawPhase.IDLE,), (RawPhase.STREAMING,), (RawPhase.ABORTED,),
                                               (RawPhase.DONE,))


def _fired(table: tuple[RawTransition, ...]) -> tuple[set[RawPhase], list[tuple[RawTransition, RawPhase]]]:
    """Every reachable phase, and every (row, source phase) some reachable state fires, in table order."""
    seen: set[RawState] = {RawState()}
    queue = [RawState()]
    fired: dict[tuple[int, RawPhase], tuple[RawTransition, RawPhase]] = {}
    rows = {id(row): row for row in table}
    while queue:
        state = queue.pop()
        for event in RawEvent:
            try:
                step = raw_step(state, event, table)
            except ProtocolViolation:
                continue
            row = step.row
            fired.setdefault((id(row), state.phase), (rows[id(row)], state.phase))
            after = replace(step.after, aborts=min(step.after.aborts, 2), forwarded=min(step.after.forwarded, 1))
            if after not in seen:
                seen.add(after)
                queue.append(after)
    order = {id(row): index for index, row in enumerate(table)}
    uses = sorted(fired.values(), key=lambda use: (order[id(use[0])], list(RawPhase).index(use[1])))
    return {state.phase for state in seen}, uses


def plan_raw_diagram(highlight: Highlight = NO_HIGHLIGHT, table: tuple[RawTransition, ...] = RAW_TABLE) -> DiagramPlan:
    phases, uses = _fired(table)
    groups: dict[tuple[RawPhase, RawPhase], list[tuple[RawTransition, RawPhase]]] = {}
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
    nodes = tuple(
        PlannedNode(state=phase, initial=phase is RawPhase.IDLE, absorbing=phase not in leaves, decode_only=False,
                    ignores=(), highlighted=highlight.state is phase)
        for phase in RawPhase
        if phase in phases
    )
    ranks: tuple[tuple[StateId, ...], ...] = tuple(
        tuple(phase for phase in group if phase in phases) for group in RAW_RANKS if any(p in phases for p in group)
    )
    legend = (
        "edge: event [guard] / actions; the same in every mode (no decode deferral)",
        "the raw engine adapter, from Dynamo 1.3.1 (spec, section 15.2)",
    )
    return DiagramPlan("raw", "Raw engine adapter", nodes, edges, ranks, legend)
