"""What the diagram of the engine lifecycle shows, decided from its table.

The same drawing conventions as the request diagram, as every phase machine
draws them (:mod:`.phase_diagram`): one node per reachable phase, rows
between the same two phases share one edge with one label line each, the
initial phase is marked.  The lifecycle has no modes and no ignored events, so neither is
drawn.  Forbidden calls are not drawn either; the spec lists them.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.lifecycle import LifecycleEvent, LifecycleState, Phase, lifecycle_table
from dynamo_backend_protocol.model.teach.diagram_plan import NO_HIGHLIGHT, DiagramPlan, Highlight
from dynamo_backend_protocol.model.teach.phase_diagram import plan_phase_diagram

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


def plan_lifecycle_diagram(highlight: Highlight = NO_HIGHLIGHT) -> DiagramPlan:
    return plan_phase_diagram(
        lifecycle_table(),
        name="lifecycle",
        title="Engine lifecycle",
        initial=LifecycleState(),
        events=tuple(LifecycleEvent),
        phases=tuple(Phase),
        ranks=LIFECYCLE_RANKS,
        legend=(
            "edge: engine call or how it ended [guard]",
            "calls not drawn are forbidden in that phase (spec, section 12)",
        ),
        highlight=highlight,
    )
