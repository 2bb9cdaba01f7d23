"""Liveness: which runs never end, and which fairness rules them out.

The explorer's lassos are replayed on a real machine here: the prefix leads
to a state, the cycle leads back to that same state, and no state on the way
meets the property's goal; so a printed lasso is a run the protocol allows.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import (
    FORBIDDEN,
    CompiledTable,
    ControlState,
    EventKind,
    Mode,
    Transition,
    parse_event,
)
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.liveness import Lasso, LivenessResult, check_liveness
from dynamo_backend_protocol.model.liveness import (
    FIRST_TOKEN_OR_END,
    LIVENESS_PROPERTIES,
    SETUP_RETURNS,
    STREAM_ENDS,
    Fairness,
    LivenessProperty,
    RequestLiveness,
)
from model_helpers import run
from test_model_mutations import remove

NOT_DECODE = [Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE]
PROPERTY = {prop.rule: prop for prop in LIVENESS_PROPERTIES}


def result_for(mode: Mode, rule: str, table: CompiledTable | None = None) -> LivenessResult:
    report = explore(mode) if table is None else explore(mode, table)
    [result] = [result for result in report.liveness if result.rule == rule]
    return result


def assert_loops_without_goal(mode: Mode, lasso: Lasso, prop: RequestLiveness, table: CompiledTable) -> None:
    """The lasso is a real run: its cycle returns to where it started and never meets the goal."""
    machine = run(mode, lasso.prefix, table)
    entry = machine.state
    assert not prop.goal(entry)
    for name in lasso.cycle:
        machine.fire(parse_event(name))
        assert not prop.goal(machine.state), f"{name} reaches the goal in {machine.state.describe()}"
    assert machine.state == entry
    assert lasso.cycle


def takes_none_of(fairness: Fairness[object], lasso: Lasso) -> bool:
    return not any(fairness.covers(parse_event(name)) for name in lasso.cycle)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_every_request_ends_under_setup_returns_and_stream_ends(mode: Mode) -> None:
    """DONE-EVENTUALLY holds in every mode, needs exactly these two assumptions,
    and for each the explorer shows a run that ends nowhere without it: a
    generate that never returns, an engine that yields for ever."""
    result = result_for(mode, "DONE-EVENTUALLY")
    assert result.holds
    assert result.needs == [SETUP_RETURNS.name, STREAM_ENDS.name]
    assert result.without_fairness is not None
    for fairness in (SETUP_RETURNS, STREAM_ENDS):
        lasso = result.without[fairness.name]
        assert_loops_without_goal(mode, lasso, PROPERTY["DONE-EVENTUALLY"], CompiledTable())
        assert takes_none_of(fairness, lasso)  # type: ignore[arg-type]


def test_a_request_that_never_ends_is_a_fair_lasso() -> None:
    """Bug: after abort every stream ending is refused.  DONE-EVENTUALLY is then
    violated even under its fairness, since no ending is ever allowed in
    Aborted.  The loop must take an engine item (engine-progresses), and the
    first one changes the state (something was forwarded), so the shortest
    lasso reaches Aborted after one item: setup, token_chunk, stop (the
    explorer tries token_chunk before stop), then token_chunk for ever."""
    rows = REQUEST_ROWS_WITHOUT_ENDINGS_IN_ABORTED
    forbidden = dict(FORBIDDEN)
    for kind in ENDINGS:
        forbidden[(ControlState.ABORTED, kind)] = "STREAM-EVENT-ORDER"
    result = result_for(Mode.AGGREGATED, "DONE-EVENTUALLY", CompiledTable(rows, forbidden))
    assert not result.holds
    assert result.counterexample is not None
    assert result.counterexample == Lasso(["setup", "token_chunk", "stop"], ["token_chunk"])
    assert_loops_without_goal(
        Mode.AGGREGATED, result.counterexample, PROPERTY["DONE-EVENTUALLY"], CompiledTable(rows, forbidden)
    )


ENDINGS = (EventKind.TERMINAL, EventKind.ERROR, EventKind.END, EventKind.DROP)


def _rows_without_endings_in_aborted() -> tuple[Transition, ...]:
    rows = remove(ControlState.ABORTED, ENDINGS[0])
    for kind in ENDINGS[1:]:
        rows = remove(ControlState.ABORTED, kind, rows=rows)
    return rows


REQUEST_ROWS_WITHOUT_ENDINGS_IN_ABORTED = _rows_without_endings_in_aborted()


@pytest.mark.parametrize("rule", ["ABORT-EVENTUALLY", "DECODE-WAIT-ENDS"])
def test_decode_deferral_needs_first_token_or_end_and_shows_the_tokenless_loop(rule: str) -> None:
    """The upstream question "what if the first token never arrives?" has a
    definite answer in the model: with first-token-or-end (DECODE-WAIT-ENDS,
    ABORT-EVENTUALLY) the wait ends; without it, the explorer shows the engine
    that keeps yielding token-less chunks.  Shortest: setup, stop reach
    CancelPending; engine progress forces an engine item, and the only one that
    neither signals first-token nor ends is empty_chunk; the first one changes
    the state (something was forwarded), so the loop starts after it."""
    result = result_for(Mode.DECODE, rule)
    assert result.holds and result.triggered
    assert result.needs == [FIRST_TOKEN_OR_END.name]
    lasso = result.without[FIRST_TOKEN_OR_END.name]
    assert lasso == Lasso(["setup", "stop", "empty_chunk"], ["empty_chunk"])
    assert_loops_without_goal(Mode.DECODE, lasso, PROPERTY[rule], CompiledTable())


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
def test_abort_eventually_holds_without_fairness_outside_decode(mode: Mode) -> None:
    """Outside decode the abort is immediate, so ABORT-EVENTUALLY needs no
    assumption at all, and nothing is ever deferred (DECODE-WAIT-ENDS is vacuous)."""
    abort = result_for(mode, "ABORT-EVENTUALLY")
    assert abort.holds and abort.triggered and abort.without_fairness is None and abort.needs == []
    deferred = result_for(mode, "DECODE-WAIT-ENDS")
    assert deferred.holds and not deferred.triggered


# --------------------------------------------------------------------------- weak fairness on small graphs

TAKE_Y: Fairness[str] = Fairness("y", "y eventually happens", lambda ev: ev == "y")
EVENTUALLY_B: LivenessProperty[str, str] = LivenessProperty(
    "T", "reaches_b", lambda s: True, lambda s: s == "B", (TAKE_Y,)
)


def test_a_loop_that_never_takes_an_always_allowed_fair_event_is_excluded() -> None:
    """In A, x loops and y leaves for the goal B; y is allowed in every state
    of the loop, so weak fairness on y rules the loop out, and only dropping
    the assumption brings it back."""
    graph = {"A": [("x", "A"), ("y", "B")], "B": []}
    result = check_liveness(graph, "A", EVENTUALLY_B, str)
    assert result.holds
    assert result.without == {"y": Lasso([], ["x"])}


def test_a_loop_through_a_state_where_the_fair_event_is_not_allowed_is_fair() -> None:
    """Weak fairness only binds an event that stays allowed: a loop A -> C -> A
    where C does not allow y is fair, so the property fails and the lasso
    passes C."""
    graph = {"A": [("x", "C"), ("y", "B")], "C": [("x", "A")], "B": []}
    result = check_liveness(graph, "A", EVENTUALLY_B, str)
    assert not result.holds
    assert result.counterexample == Lasso([], ["x", "x"])
