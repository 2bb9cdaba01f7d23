"""Exploring N requests sharing one engine (:mod:`..engine`) with the generic walk.

This is the reference the compiled explorer (:mod:`.compiled`) is checked
against: every composed state is a tuple of the machines' own objects and
every step goes through both tables, so it is slow (the per-state cost
``check --requests N --baseline`` prints) but obviously the composition.
Every request invariant is checked on each request inside each state and
step, the composition's own invariants on the whole.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.engine import (
    ENGINE_OWN_EVENTS,
    ENGINE_STATE_INVARIANTS,
    ENGINE_STEP_INVARIANTS,
    Composition,
    EngineEvent,
    EngineState,
    EngineStep,
    RequestMove,
    engine_liveness,
    engine_step,
    initial_engine_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import MachineReport, MachineSpec, timed_check
from dynamo_backend_protocol.model.invariants import (
    STATE_INVARIANTS,
    STEP_INVARIANTS,
    TABLE_WELL_FORMED,
    Invariant,
    StateInvariant,
    StepInvariant,
)
from dynamo_backend_protocol.model.lifecycle import CLEANUP_AFTER_START, CLEANUP_REACHABLE, Phase
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS


def engine_events(composition: Composition) -> tuple[EngineEvent, ...]:
    moves = [RequestMove(index, ev) for index in range(composition.requests) for ev in ALL_EVENTS]
    return (*ENGINE_OWN_EVENTS, *moves)


def event_name(ev: EngineEvent) -> str:
    return ev.name() if isinstance(ev, RequestMove) else ev.value


def _on_every_request(inv: StateInvariant) -> Invariant[EngineState]:
    return Invariant(inv.rule, inv.name, lambda state: all(inv.holds(request) for request in state.requests))


def _on_request_step(inv: StepInvariant) -> Invariant[EngineStep]:
    return Invariant(inv.rule, inv.name, lambda step: step.request_step is None or inv.holds(step.request_step))


def _describe(step: EngineStep) -> str:
    actions = [action.value for action in step.request_step.actions] if step.request_step else []
    return f"{event_name(step.event)} in {step.before.describe()} -> {step.after.describe()} / {actions}"


LIVENESS_MAX_REQUESTS = 2
"""Liveness is checked on the generic walk's graph, without symmetry: beyond two requests it is too slow."""


def explore_engine(
    composition: Composition,
    table: CompiledTable = DEFAULT_TABLE,
    explore_past_violations: bool = False,
    liveness: bool = False,
) -> MachineReport:
    """Breadth-first over every interleaving of the requests and the lifecycle; no symmetry.
    With ``liveness``, also every liveness property of the composition under its fairness."""
    return timed_check(
        MachineSpec(
            initial=initial_engine_state(table, composition),
            events=engine_events(composition),
            step=lambda state, ev: engine_step(table, composition, state, ev),
            after=lambda step: step.after,
            event_name=event_name,
            describe_state=EngineState.describe,
            describe_step=_describe,
            state_invariants=[*map(_on_every_request, STATE_INVARIANTS), *ENGINE_STATE_INVARIANTS],
            step_invariants=[*map(_on_request_step, STEP_INVARIANTS), *ENGINE_STEP_INVARIANTS],
            forbidden=(ProtocolViolation, NotEnabled),
            malformed=(TableError,),
            well_formed=(TABLE_WELL_FORMED, "table_is_deterministic_and_complete"),
            finished=lambda state: state.lifecycle.phase is Phase.CLEANED_UP,
            can_finish=(CLEANUP_AFTER_START, CLEANUP_REACHABLE),
            liveness=engine_liveness(composition) if liveness else (),
            max_states=2_000_000,
            explore_past_violations=explore_past_violations,
        )
    )
