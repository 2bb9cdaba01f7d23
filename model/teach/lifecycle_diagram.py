"""What the diagram of the engine lifecycle shows, decided from its table.

The same drawing conventions as the request diagram (see
:mod:`.diagram_plan`): one node per reachable phase, rows between the same
two phases share one edge with one label line each, the initial phase is
marked.  The lifecycle has no modes and no ignored events, so neither is
drawn.  Forbidden calls are not drawn either; the spec lists them.
"""

from __future__ import annotations

from collections.abc import Iterator

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.walk import Walk
from dynamo_backend_protocol.model.lifecycle import (
    LIFECYCLE_TABLE,
    LifecycleEvent,
    LifecycleState,
    LifecycleTransition,
    Phase,
    lifecycle_step,
)
from dynamo_backend_protocol.model.teach.diagram_plan import (
    NO_HIGHLIGHT,
    DiagramPlan,
    EdgeLine,
    Highlight,
    PlannedEdge,
    PlannedNode,
    StateId,
)

LIFECYCLE_RANKS: tuple[tuple[Phase, ...], ...] = (
    (Phase.CONSTRUCTED,),
    (Phase.STARTING,),
    (Phase.RUNNING, Phase.START_FAILED),
    (Phase.DRAINING,),
    (Phase.CLEANING_UP,),
    (Phase.CLEANED_UP,),
)
"""Top to bottom in the order a worker drives its engine; a failed start sits
beside a running engine because both lead to cleanup."""


def _fired() -> tuple[set[Phase], list[tuple[LifecycleTransition, Phase]]]:
    """Every reachable phase, and every (row, source phase) some reachable state fires."""
    fired: dict[tuple[int, Phase], tuple[LifecycleTransition, Phase]] = {}

    def expand(state: LifecycleState) -> Iterator[tuple[LifecycleEvent, LifecycleState, bool]]:
        for event in LifecycleEvent:
            try:
                taken = lifecycle_step(state, event)
            except ProtocolViolation:
                continue
            fired.setdefault((id(taken.row), state.phase), (taken.row, state.phase))
            yield event, taken.after, True

    walk: Walk[LifecycleState, LifecycleEvent] = Walk(LifecycleState())
    walk.run(expand, lambda state: True, max_states=10_000)
    order = {id(row): index for index, row in enumerate(LIFECYCLE_TABLE)}
    uses = sorted(fired.values(), key=lambda use: (order[id(use[0])], list(Phase).index(use[1])))
    return {state.phase for state in walk.parent}, uses


def plan_lifecycle_diagram(highlight: Highlight = NO_HIGHLIGHT) -> DiagramPlan:
    phases, uses = _fired()
    groups: dict[tuple[Phase, Phase], list[tuple[LifecycleTransition, Phase]]] = {}
    for row, source in uses:
        target = source if row.target is None else row.target
        groups.setdefault((source, target), []).append((row, source))
    edges = tuple(
        PlannedEdge(
            source,
            target,
            tuple(
                EdgeLine(
                    row.label(), "", (row.rule,), False, row is highlight.row and source is highlight.source,
                    ((row, source),),
                )
                for row, source in members
            ),
        )
        for (source, target), members in groups.items()
    )
    leaves = {edge.source for edge in edges}
    nodes = tuple(
        PlannedNode(
            state=phase,
            initial=phase is Phase.CONSTRUCTED,
            absorbing=phase not in leaves,
            decode_only=False,
            ignores=(),
            highlighted=highlight.state is phase,
        )
        for phase in Phase
        if phase in phases
    )
    ranks: tuple[tuple[StateId, ...], ...] = tuple(
        tuple(phase for phase in group if phase in phases)
        for group in LIFECYCLE_RANKS
        if any(phase in phases for phase in group)
    )
    legend = (
        "edge: engine call or how it ended [guard]",
        "calls not drawn are forbidden in that phase (spec, section 12)",
    )
    return DiagramPlan("lifecycle", "Engine lifecycle", nodes, edges, ranks, legend)
