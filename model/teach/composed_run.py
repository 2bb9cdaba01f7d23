"""Telling a composed scenario, and holding its narrated end to its stated one.

:func:`tell` narrates a scenario in the composition it names (with its fault
planted, for a counter-example) or in one the caller gives, so a test can
plant a fault in a scenario that does not name one; :func:`unmet` lists where
the narrated end differs from the scenario's :class:`.Expected`.
"""

from __future__ import annotations

from dataclasses import replace

from dynamo_backend_protocol.model.engine import Composition, EngineEvent
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.state import initial_state
from dynamo_backend_protocol.model.table import ABORT_DEFERRED, CANCELLED_DEFERRED, REQUEST_TABLE
from dynamo_backend_protocol.model.teach.composed_events import parse_disagg_event, parse_engine_event
from dynamo_backend_protocol.model.teach.composed_scenarios import ComposedScenario, Machine, PlantedFault
from dynamo_backend_protocol.model.teach.narrate_disagg import DisaggNarration, narrate_disagg
from dynamo_backend_protocol.model.teach.narrate_engine import EngineNarration, narrate_engine
from dynamo_backend_protocol.model.vocabulary import ActionKind, ControlState

ComposedNarration = DisaggNarration | EngineNarration


def without_decode_deferral() -> CompiledTable:
    """The request table with decode's deferral removed: a stop or kill before first-token
    (or a stop remembered until setup) aborts at once, as in every other mode."""
    deferring = (ABORT_DEFERRED, CANCELLED_DEFERRED)
    rows = tuple(
        replace(row, target=ControlState.ABORTED, actions=(ActionKind.CALL_ABORT,))
        if any(row.guard is guard for guard in deferring)
        else row
        for row in REQUEST_TABLE
    )
    return CompiledTable(rows)


def scenario_table(scenario: ComposedScenario) -> CompiledTable:
    return without_decode_deferral() if scenario.fault is PlantedFault.WITHOUT_DECODE_DEFERRAL else DEFAULT_TABLE


def scenario_composition(scenario: ComposedScenario) -> Composition:
    waits = scenario.fault is not PlantedFault.CLEANUP_DOES_NOT_WAIT
    return Composition(scenario.requests, scenario.mode, cleanup_waits_for_requests=waits)


def tell(
    scenario: ComposedScenario, table: CompiledTable | None = None, composition: Composition | None = None
) -> ComposedNarration:
    """The scenario narrated; ``table`` and ``composition`` replace the ones it names."""
    chosen = scenario_table(scenario) if table is None else table
    if scenario.machine is Machine.DISAGG:
        return narrate_disagg([parse_disagg_event(token) for token in scenario.events], chosen)
    shared = scenario_composition(scenario) if composition is None else composition
    events: list[EngineEvent] = [parse_engine_event(token, shared.requests) for token in scenario.events]
    return narrate_engine(events, shared, chosen)


def unmet(scenario: ComposedScenario, told: ComposedNarration) -> list[str]:
    """Each way the narrated end differs from the scenario's expected end; empty when they agree."""
    expected = scenario.expected
    differences: list[str] = []

    def compare(what: str, wanted: object, got: object) -> None:
        if wanted != got:
            differences.append(f"{what}: expected {wanted}, narrated {got}")

    compare("abort steps", expected.aborts_at, tuple(step.number for step in told.steps if step.calls_abort))
    compare("refused steps", dict(expected.refused), {step.number: step.rule for step in told.steps if step.refused})
    compare("broken rules", sorted(expected.broken), sorted({b.rule for step in told.steps for b in step.broken}))
    if isinstance(told, DisaggNarration):
        compare("transfer", expected.transfer, told.final.transfer)
        compare("requests", expected.requests, (told.final.request.control,))
    else:
        compare("engine", expected.engine, told.final.lifecycle.phase)
        ends = tuple(None if request == initial_state(request.mode) else request.control
                     for request in told.final.requests)
        compare("requests", expected.requests, ends)
    return differences
