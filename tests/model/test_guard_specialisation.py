"""Guards read as a mode settles them: what the diagrams and the protocol page show."""

from __future__ import annotations

from dynamo_backend_protocol.model import Mode, parse_event
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import ABORT_NOW, CANCELLED_ABORT_NOW, NOTICE_COUNTS, Guard
from dynamo_backend_protocol.model.vocabulary import CancelCause, Event

STOP = parse_event("stop")


def states(mode: Mode, *, first_token: tuple[bool, ...] = (False, True)) -> list[tuple[RequestState, Event]]:
    return [(RequestState(mode=mode, first_token=seen, cancel=CancelCause.STOP), STOP) for seen in first_token]


def test_a_condition_that_holds_throughout_satisfies_its_clause() -> None:
    """Outside decode, "not decode" always holds, so "not decode or first-token seen"
    says nothing and the guard is read away entirely."""
    assert ABORT_NOW.specialised(states(Mode.AGGREGATED)) is None


def test_a_condition_that_never_holds_drops_out_of_its_clause() -> None:
    """In decode, "not decode" never holds; what decides is whether first-token was seen."""
    assert ABORT_NOW.specialised(states(Mode.DECODE)) == "first-token seen"
    cancelled_or_not = [*states(Mode.DECODE), (RequestState(mode=Mode.DECODE, first_token=True), STOP)]
    assert CANCELLED_ABORT_NOW.specialised(cancelled_or_not) == "cancelled, first-token seen"


def test_a_condition_that_varies_is_kept() -> None:
    """Across decode and agg together, nothing is settled: the guard reads in full."""
    both = states(Mode.DECODE) + states(Mode.AGGREGATED)
    assert NOTICE_COUNTS.specialised(both) == "decode, before first-token"
    assert ABORT_NOW.specialised(both) == "not decode or first-token seen"


def test_an_opaque_guard_is_one_condition() -> None:
    """A guard written as a bare test (as a new table row may be) still reads away
    when it always holds, and reads as its name when it varies."""
    seen = Guard("first-token seen", lambda s, e: s.first_token)
    assert seen.specialised(states(Mode.DECODE, first_token=(True,))) is None
    assert seen.specialised(states(Mode.DECODE)) == "first-token seen"
