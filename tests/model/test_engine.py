"""N requests sharing one engine with its lifecycle: cleanup waits for live requests
(ENGINE-CLEANUP-WAITS), and without that wait the shutdown race of ai-dynamo/dynamo
#13993 appears as a shortest counterexample.  The compiled explorer is held to the
generic one state for state."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode, parse_event
from dynamo_backend_protocol.model.engine import (
    CLEANUP_EVENTUALLY,
    CLEANUP_WAITS,
    NO_ABORT_AFTER_CLEANUP,
    NO_LIVE_AFTER_CLEANUP,
    Composition,
    RequestMove,
    engine_step,
    initial_engine_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled
from dynamo_backend_protocol.model.explore.checking import InvariantResult
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.explore.compiled_liveness import check_compiled_liveness
from dynamo_backend_protocol.model.explore.engine import explore_engine
from dynamo_backend_protocol.model.explore.liveness import LivenessResult
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE
from test_disagg import without_decode_deferral

RACING = Composition(2, Mode.AGGREGATED, cleanup_waits_for_requests=False)
"""A Worker that begins cleanup while requests still stream."""


def broken(results: list[InvariantResult]) -> dict[str, list[str] | None]:
    return {result.name: result.counterexample for result in results if not result.holds}


def compiled_liveness(composition: Composition) -> list[LivenessResult]:
    """Liveness on the compiled graph (held to the generic search in test_compiled_liveness.py)."""
    report = explore_compiled(composition, keep_graph=True)
    assert report.graph is not None
    return check_compiled_liveness(report.graph)


def test_the_shipped_composition_holds_every_invariant() -> None:
    """ENGINE-NO-LIVE-AFTER-CLEANUP and ENGINE-NO-ABORT-AFTER-CLEANUP hold for two
    decode requests on one engine, with every request invariant and cleanup reachable."""
    report = explore_compiled(Composition(2, Mode.DECODE))
    assert report.ok, broken(report.invariants)
    rules = {result.rule for result in report.invariants}
    assert {CLEANUP_WAITS, NO_LIVE_AFTER_CLEANUP, NO_ABORT_AFTER_CLEANUP} <= rules


def test_cleanup_that_does_not_wait_leaves_a_request_in_flight() -> None:
    """ENGINE-NO-LIVE-AFTER-CLEANUP, ENGINE-CLEANUP-WAITS: without the wait, the shortest
    run starts the engine, sets one request up and calls cleanup under it."""
    found = broken(explore_compiled(RACING).invariants)
    shortest = ["start_called", "start_ok", "r1:setup", "cleanup_called"]
    assert found["no_request_in_flight_once_cleanup_begins"] == shortest
    assert found["cleanup_begins_with_no_request_in_flight"] == shortest


def test_a_shutdown_racing_a_stop_aborts_after_cleanup() -> None:
    """ENGINE-NO-ABORT-AFTER-CLEANUP (#13993): past the first violation, a stop of the
    request still live under cleanup calls abort on the cleaned engine."""
    found = broken(explore_compiled(RACING, explore_past_violations=True).invariants)
    assert found["no_abort_once_cleanup_begins"] == [
        "start_called", "start_ok", "r1:setup", "cleanup_called", "r1:stop"
    ]


def test_the_compiled_explorer_agrees_with_the_generic_one() -> None:
    """Without symmetry both explorers walk the same composition (past violations, so
    every state): same number of states and transitions, same verdicts and equally
    short counterexamples."""
    compiled = explore_compiled(RACING, symmetry=False, explore_past_violations=True)
    generic = explore_engine(RACING, explore_past_violations=True)
    assert (compiled.states, compiled.transitions) == (generic.states, generic.transitions)
    lengths = {name: len(path or []) for name, path in broken(compiled.invariants).items()}
    assert lengths == {name: len(path or []) for name, path in broken(generic.invariants).items()}


def test_symmetry_shrinks_the_space_and_keeps_every_verdict() -> None:
    """Interchangeable requests explored once: far fewer states, the same broken invariants
    with equally short counterexamples."""
    racing = Composition(3, Mode.AGGREGATED, cleanup_waits_for_requests=False)
    reduced, full = explore_compiled(racing), explore_compiled(racing, symmetry=False)
    assert reduced.states * 4 < full.states
    lengths = {name: len(path or []) for name, path in broken(reduced.invariants).items()}
    assert lengths == {name: len(path or []) for name, path in broken(full.invariants).items()} != {}


def test_request_invariants_are_checked_inside_the_composition() -> None:
    """DECODE-DEFER: a request table without the decode deferral is caught in the
    composition too, the engine started first."""
    table = CompiledTable(without_decode_deferral())
    found = broken(explore_compiled(Composition(2, Mode.DECODE), table).invariants)
    assert found["decode_no_abort_before_first_token"] == ["start_called", "start_ok", "r1:setup", "r1:stop"]


def test_a_request_waiting_for_setup_is_in_flight() -> None:
    """ENGINE-CLEANUP-WAITS: a request stopped before its setup returned is still at the
    engine (generate was called), so cleanup waits for it too."""
    composition = Composition(1, Mode.AGGREGATED)
    state = initial_engine_state(DEFAULT_TABLE, composition)
    for event in (LifecycleEvent.START_CALLED, LifecycleEvent.START_OK, RequestMove(0, parse_event("stop"))):
        state = engine_step(DEFAULT_TABLE, composition, state, event).after
    with pytest.raises(NotEnabled) as refused:
        engine_step(DEFAULT_TABLE, composition, state, LifecycleEvent.CLEANUP_CALLED)
    assert refused.value.rule == CLEANUP_WAITS


def test_a_draining_engine_takes_no_new_request() -> None:
    """ENGINE-CLEANUP-WAITS needs requests to stop arriving: once drain began, a request
    still idle cannot reach generate."""
    composition = Composition(1, Mode.AGGREGATED)
    state = initial_engine_state(DEFAULT_TABLE, composition)
    for event in (LifecycleEvent.START_CALLED, LifecycleEvent.START_OK, LifecycleEvent.DRAIN):
        state = engine_step(DEFAULT_TABLE, composition, state, event).after
    with pytest.raises(NotEnabled) as refused:
        engine_step(DEFAULT_TABLE, composition, state, RequestMove(0, parse_event("setup")))
    assert refused.value.rule == "LIFECYCLE-START-FIRST", "the lifecycle serves generate only while running"


def test_cleanup_eventually_begins_only_if_requests_end_and_the_owner_calls_it() -> None:
    """ENGINE-CLEANUP-EVENTUALLY holds for two requests under its fairness; it needs the
    owner to call cleanup and each request's stream to end, each shown by the loop that
    dropping it lets through."""
    found = compiled_liveness(Composition(2, Mode.AGGREGATED))
    [result] = [each for each in found if each.rule == CLEANUP_EVENTUALLY]
    assert result.holds
    assert {"owner-cleans-up", "r1-stream-ends", "r2-stream-ends"} <= set(result.needs)
    assert result.without["r1-stream-ends"].cycle == ["r1:token_chunk"]


def test_each_request_in_flight_reaches_done_on_a_shared_engine() -> None:
    """DONE-EVENTUALLY holds for each of two requests in the composition, fair on its own
    events only: the other request's progress is not assumed."""
    done = [found for found in compiled_liveness(Composition(2, Mode.DECODE)) if found.rule == "DONE-EVENTUALLY"]
    assert [found.name for found in done] == ["request_1_in_flight_reaches_done", "request_2_in_flight_reaches_done"]
    assert all(found.holds for found in done)
