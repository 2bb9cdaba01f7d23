"""Liveness on the compiled, symmetry-reduced graph (ENGINE-CLEANUP-EVENTUALLY, DONE-EVENTUALLY).

Held to the generic search where both run (its verdicts, what each property needs, whether it
holds without fairness), and its lassos replayed on the generic composition's own step function:
a lasso is a run the composition allows, its loop returns to where it began, never meets the
goal, and is fair under every assumption the property keeps.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode, parse_event
from dynamo_backend_protocol.model.engine import (
    CLEANUP_EVENTUALLY,
    Composition,
    EngineEvent,
    EngineLiveness,
    EngineState,
    RequestMove,
    engine_liveness,
    engine_step,
    initial_engine_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.explore.compiled_liveness import check_compiled_liveness
from dynamo_backend_protocol.model.explore.engine import engine_events, explore_engine
from dynamo_backend_protocol.model.explore.liveness import Lasso, LivenessResult
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.liveness import DONE_EVENTUALLY
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE
from model_helpers import aborted_never_ends


def compiled_liveness(composition: Composition, table: CompiledTable = DEFAULT_TABLE) -> list[LivenessResult]:
    report = explore_compiled(composition, table, keep_graph=True)
    assert report.graph is not None
    return check_compiled_liveness(report.graph)


def verdicts(results: list[LivenessResult]) -> list[tuple[str, bool, bool, list[str], bool]]:
    return [
        (found.name, found.holds, found.triggered, found.needs, found.without_fairness is None) for found in results
    ]


def event(name: str) -> EngineEvent:
    request, _, rest = name.partition(":")
    if rest:
        return RequestMove(int(request[1:]) - 1, parse_event(rest))
    return LifecycleEvent(name)


def step(composition: Composition, table: CompiledTable, state: EngineState, ev: EngineEvent) -> EngineState | None:
    try:
        return engine_step(table, composition, state, ev).after
    except (ProtocolViolation, NotEnabled, TableError):
        return None


def assert_a_fair_loop_missing_the_goal(
    composition: Composition, table: CompiledTable, prop: EngineLiveness, kept: list[str], lasso: Lasso
) -> None:
    """The prefix is allowed and passes a trigger with no goal after it; the loop is allowed,
    comes back, never meets the goal, and each kept fairness class is taken or disabled on it."""
    state = initial_engine_state(table, composition)
    since_trigger: list[EngineState] | None = [state] if prop.trigger(state) else None
    for name in lasso.prefix:
        after = step(composition, table, state, event(name))
        assert after is not None, f"{name} is not allowed in {state.describe()}"
        state = after
        since_trigger = [state] if prop.trigger(state) else (None if since_trigger is None else [*since_trigger, state])
    assert since_trigger is not None and not any(prop.goal(seen) for seen in since_trigger)
    entry, on_loop = state, [state]
    for name in lasso.cycle:
        after = step(composition, table, state, event(name))
        assert after is not None, f"{name} is not allowed in {state.describe()}"
        state = after
        assert not prop.goal(state)
        on_loop.append(state)
    assert lasso.cycle and state == entry
    events = engine_events(composition)
    for fair in (f for f in prop.fairness if f.name in kept):
        taken = any(fair.covers(event(name)) for name in lasso.cycle)
        disabled = any(
            not any(fair.covers(ev) and step(composition, table, seen, ev) is not None for ev in events)
            for seen in on_loop
        )
        assert taken or disabled, f"{fair.name} is neither taken nor disabled on {lasso.describe()}"


def assert_every_lasso_is_real(
    composition: Composition, table: CompiledTable, results: list[LivenessResult]
) -> None:
    for prop, found in zip(engine_liveness(composition), results, strict=True):
        assert found.name == prop.name
        every = [f.name for f in prop.fairness]
        if found.counterexample is not None:
            assert_a_fair_loop_missing_the_goal(composition, table, prop, every, found.counterexample)
        for dropped, lasso in found.without.items():
            kept = [name for name in every if name != dropped]
            assert_a_fair_loop_missing_the_goal(composition, table, prop, kept, lasso)
        if found.without_fairness is not None:
            assert_a_fair_loop_missing_the_goal(composition, table, prop, [], found.without_fairness)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_one_request_gets_the_generic_searchs_verdicts(mode: Mode) -> None:
    composition = Composition(1, mode)
    generic = explore_engine(composition, liveness=True).liveness
    assert verdicts(compiled_liveness(composition)) == verdicts(generic)


def test_two_requests_get_the_generic_searchs_verdicts_where_a_request_never_ends() -> None:
    """N = 2 on a table where an aborted request never ends: DONE-EVENTUALLY and the engine's
    cleanup fail for both searches, and the compiled search's counterexamples are real runs."""
    table, mode = aborted_never_ends()
    composition = Composition(2, mode)
    compiled = compiled_liveness(composition, table)
    assert verdicts(compiled) == verdicts(explore_engine(composition, table, liveness=True).liveness)
    assert not any(found.holds for found in compiled)
    assert_every_lasso_is_real(composition, table, compiled)


def test_two_requests_get_the_generic_searchs_verdicts_on_the_shipped_table() -> None:
    composition = Composition(2, Mode.DECODE)
    compiled = compiled_liveness(composition)
    assert verdicts(compiled) == verdicts(explore_engine(composition, liveness=True).liveness)
    assert all(found.holds for found in compiled)


def test_three_requests_report_each_property_with_real_lassos() -> None:
    """Beyond the generic search's reach: each request's DONE-EVENTUALLY and the engine's
    cleanup hold, need their requests' setup and stream endings (and the owner), and every
    lasso printed for a dropped assumption is a run the composition allows."""
    composition = Composition(3, Mode.DECODE)
    results = compiled_liveness(composition)
    assert [found.rule for found in results] == [DONE_EVENTUALLY] * 3 + [CLEANUP_EVENTUALLY]
    assert all(found.holds and found.triggered for found in results)
    assert results[2].needs == ["r3-setup-returns", "r3-stream-ends"]
    assert results[3].needs == [
        *(f"r{i}-{name}" for i in (1, 2, 3) for name in ("setup-returns", "stream-ends")),
        "owner-cleans-up",
    ]
    assert_every_lasso_is_real(composition, DEFAULT_TABLE, results)
