"""The fault model (spec section 14): every fault the adapter can meet inside a request is an event
of the request table, and from every reachable state where the fault can happen that event ends
the request the way the spec says: FAULT-ENGINE-RAISES with exactly one typed error, FAULT-INTERRUPT
with nothing delivered in place of the interrupt, both with the watch released."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import EventKind, Mode, event
from dynamo_backend_protocol.model.explore.reachability import explore_graph
from dynamo_backend_protocol.model.faults import (
    FAULT_INVARIANTS,
    FAULT_RESPONSES,
    Fault,
    FaultCase,
    FaultResponse,
    fault_can_happen,
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
    leaves a request live, watched, or answered with data."""
    checked = cases(mode, list(FAULT_RESPONSES.values()))
    assert {case.response.fault for case in checked} == set(Fault)
    broken = [
        (invariant.name, case.response.fault.value, case.state.describe())
        for case in checked
        for invariant in FAULT_INVARIANTS
        if not invariant.holds(case)
    ]
    assert not broken


def test_the_invariants_catch_a_fault_mapped_to_a_quiet_end() -> None:
    """FAULT-ENGINE-RAISES: if a mid-stream engine exception were taken for the stream simply ending, the
    client would never learn its request failed; the invariant must reject that mapping."""
    quiet = FaultResponse(Fault.STREAM_RAISED, event(EventKind.END), False, "FAULT-ENGINE-RAISES")
    assert any(not invariant.holds(case) for case in cases(Mode.AGGREGATED, [quiet]) for invariant in FAULT_INVARIANTS)


def test_the_invariants_catch_an_interrupt_answered_with_an_error_item() -> None:
    """FAULT-INTERRUPT: an interrupt turned into an error item would be swallowed by a consumer that
    reads items; the invariant must reject that mapping."""
    swallowed = FaultResponse(Fault.STREAM_INTERRUPTED, event(EventKind.ERROR), True, "FAULT-INTERRUPT")
    assert any(
        not invariant.holds(case) for case in cases(Mode.AGGREGATED, [swallowed]) for invariant in FAULT_INVARIANTS
    )
