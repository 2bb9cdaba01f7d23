"""What the diagram of the raw engine adapter shows, decided from its table.

The request diagram's conventions, as every phase machine draws them
(:mod:`.phase_diagram`): one node per reachable phase, rows between the same
two phases share one edge with one label line each (event [guard] / actions,
and the rule), the initial phase marked.  Events the table has no row for
are forbidden and not drawn.
"""

from __future__ import annotations

from dataclasses import replace

from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawEvent, RawPhase, RawState, RawTransition, raw_table
from dynamo_backend_protocol.model.teach.diagram_plan import NO_HIGHLIGHT, DiagramPlan, Highlight
from dynamo_backend_protocol.model.teach.phase_diagram import plan_phase_diagram

RAW_RANKS: tuple[tuple[RawPhase, ...], ...] = ((RawPhase.IDLE,), (RawPhase.STREAMING,), (RawPhase.ABORTED,),
                                               (RawPhase.DONE,))


def _counted_to_what_rows_read(state: RawState) -> RawState:
    """No guard reads the counters, so capping them changes no row drawn; it makes the walk finite."""
    return replace(state, aborts=min(state.aborts, 2), forwarded=min(state.forwarded, 1))


def plan_raw_diagram(highlight: Highlight = NO_HIGHLIGHT, table: tuple[RawTransition, ...] = RAW_TABLE) -> DiagramPlan:
    return plan_phase_diagram(
        raw_table(table),
        name="raw",
        title="Raw engine adapter",
        initial=RawState(),
        events=tuple(RawEvent),
        phases=tuple(RawPhase),
        ranks=RAW_RANKS,
        legend=(
            "edge: event [guard] / actions; the same in every mode (no decode deferral)",
            "the raw engine adapter, from Dynamo 1.3.1 (spec, section 15.2)",
        ),
        highlight=highlight,
        normalise=_counted_to_what_rows_read,
    )
