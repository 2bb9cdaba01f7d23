"""The fault model (spec section 14): every fault the adapter can meet inside a request is an event
of the request table, and from every reachable state where the fault can happen that event ends
the request the way the spec says: FAULT-ENGINE-RAISES with exactly one typed error, FAULT-INTERRUPT
with nothing delivered in place of the interrupt, both with the watch released."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import EventKind, Mode, event
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.reachability import explore_graph
from dynamo_backend_protocol.model.faults import (
    FAULT_INVARIANTS,
    FAULT_RESPONSES,
    Fault,
    FaultCase,
    FaultResponse,
    engine_fault_ends_the_request_with_one_error,
    fault_can_happen,
    interrupt_ends_the_request_without_delivering,
)


def cases(mode: Mode, responses: list[FaultResponse]) -> list[FaultCase]:
    return [
        FaultCase(state, response)
        for state in explore_graph(mode).states
        for response in responses
        if fault_can_happen(state, response)
    ]


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_every_fault_ends_the_request_as_the_fault_model_says(mode: Mode) -> None:
    """FAULT-ENGINE-RAISES and FAULT-INTERRUPT hold in every reachable state of every mode: no fault
    leaves a request live, watched, or answered with data.  Every kind of fault is met somewhere."""
    states = explore_graph(mode).states
    assert {case.response.fault for case in cases(mode, list(FAULT_RESPONSES.values()))} == set(Fault)
    broken = [(invariant.name, state.describe()) for state in states for invariant in FAULT_INVARIANTS
              if not invariant.holds(state)]
    assert not broken


def test_the_explorer_checks_the_fault_invariants() -> None:
    """``dynamo-backend-protocol check`` reports the fault rules with the table's own, so a table edit
    that breaks the fault model is caught where every other rule is."""
    checked = {(result.rule, result.name) for result in explore(Mode.DECODE).invariants}
    assert {(invariant.rule, invariant.name) for invariant in FAULT_INVARIANTS} <= checked


def test_the_invariants_catch_a_fault_mapped_to_a_quiet_end() -> None:
    """FAULT-ENGINE-RAISES: if a mid-stream engine exception were taken for the stream simply ending, the
    client would never learn its request failed; the invariant must reject that mapping."""
    quiet = FaultResponse(Fault.STREAM_RAISED, event(EventKind.END), False, "FAULT-ENGINE-RAISES")
    assert any(not engine_fault_ends_the_request_with_one_error(case) for case in cases(Mode.AGGREGATED, [quiet]))


def test_the_invariants_catch_an_interrupt_answered_with_an_error_item() -> None:
    """FAULT-INTERRUPT: an interrupt turned into an error item would be swallowed by a consumer that
    reads items; the invariant must reject that mapping."""
    swallowed = FaultResponse(Fault.STREAM_INTERRUPTED, event(EventKind.ERROR), True, "FAULT-INTERRUPT")
    assert any(
        not interrupt_ends_the_request_without_delivering(case) for case in cases(Mode.AGGREGATED, [swallowed])
    )
