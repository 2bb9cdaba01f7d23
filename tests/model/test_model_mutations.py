"""The explorer catches real bugs.

Each test plants one plausible adapter bug in a copy of ``REQUEST_TABLE`` and
asserts that exhaustive exploration reports the rule the bug breaks, with a
counterexample of exactly the minimal length.  The minimum is derived by
reasoning in each docstring (``Streaming`` needs one event, ``setup``; a
cancelled live state needs two; ``Done`` needs one, ``setup_failed``).  Each
counterexample is then replayed through a ``RequestMachine`` on the mutated
table to show that it really reaches the violation.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from dynamo_backend_protocol.model import (
    FORBIDDEN,
    REQUEST_TABLE,
    CompiledTable,
    ControlState,
    EventKind,
    FinishReason,
    Mode,
    RequestMachine,
    TableError,
    Transition,
    parse_event,
)
from dynamo_backend_protocol.model.explore import ModeReport, explore
from dynamo_backend_protocol.model.invariants import DONE_REACHABLE, TABLE_WELL_FORMED
from dynamo_backend_protocol.model.table import Guard
from model_helpers import (
    ABORT,
    FWD,
    RELEASE,
    SETUP_ERR,
    STOP_READING,
    broken_state_rules,
    broken_step_rules,
    can_reach_done,
    run,
)

IDLE = ControlState.IDLE
STREAMING = ControlState.STREAMING
CANCEL_PENDING = ControlState.CANCEL_PENDING
ABORTED = ControlState.ABORTED
DONE = ControlState.DONE

Rows = tuple[Transition, ...]


# --------------------------------------------------------------------------- building mutants


def _index(rows: Rows, state: ControlState, kind: EventKind, when: str | None) -> int:
    found = [
        i
        for i, row in enumerate(rows)
        if state in row.sources and row.trigger is kind and (when is None or row.guard.name == when)
    ]
    assert len(found) == 1, f"expected one row for {state} {kind} [{when}], found {len(found)}"
    return found[0]


def mutate(
    state: ControlState,
    kind: EventKind,
    when: str | None = None,
    rows: Rows = REQUEST_TABLE,
    **changes: object,
) -> Rows:
    """Change the row for (state, kind[, guard named ``when``]) for ``state``
    only; the row's other source states keep the original behaviour."""
    i = _index(rows, state, kind, when)
    row = rows[i]
    changed = replace(row, sources=(state,), **changes)  # type: ignore[arg-type]
    others = tuple(s for s in row.sources if s is not state)
    kept = (replace(row, sources=others),) if others else ()
    return (*rows[:i], changed, *kept, *rows[i + 1 :])


def remove(state: ControlState, kind: EventKind, when: str | None = None, rows: Rows = REQUEST_TABLE) -> Rows:
    """Delete the row for (state, kind[, guard named ``when``]) for ``state`` only."""
    i = _index(rows, state, kind, when)
    row = rows[i]
    others = tuple(s for s in row.sources if s is not state)
    kept = (replace(row, sources=others),) if others else ()
    return (*rows[:i], *kept, *rows[i + 1 :])


def row_for(state: ControlState, kind: EventKind, when: str | None = None) -> Transition:
    return REQUEST_TABLE[_index(REQUEST_TABLE, state, kind, when)]


# --------------------------------------------------------------------------- checking


def violated_rules(report: ModeReport) -> set[str]:
    return {result.rule for result in report.violations()}


def replay_reaches_violation(mode: Mode, table: CompiledTable, rule: str, counterexample: list[str]) -> None:
    """Replaying the counterexample breaks ``rule`` on its last event, not before."""
    if rule == TABLE_WELL_FORMED:
        machine = run(mode, counterexample[:-1], table)
        with pytest.raises(TableError):
            machine.fire(parse_event(counterexample[-1]))
        return
    machine = RequestMachine(mode, table)
    if rule == DONE_REACHABLE:
        for name in counterexample:
            assert can_reach_done(table, machine.state), f"{machine.state.describe()} is stuck before the end"
            machine.fire(parse_event(name))
        assert not can_reach_done(table, machine.state)
        return
    assert rule not in broken_state_rules(machine.state)
    for i, name in enumerate(counterexample):
        machine.fire(parse_event(name))
        broken = broken_state_rules(machine.state) | broken_step_rules(machine.history[-1])
        last = i == len(counterexample) - 1
        assert (rule in broken) == last, f"after {counterexample[: i + 1]}: {sorted(broken)}"


Forbidden = dict[tuple[ControlState, EventKind], str]


def assert_caught(mode: Mode, rows: Rows, rule: str, length: int, forbidden: Forbidden | None = None) -> ModeReport:
    """Explore the mutant in ``mode``: ``rule`` must be violated, its shortest
    counterexample must have exactly ``length`` events and replay to the violation."""
    table = CompiledTable(rows, forbidden)
    report = explore(mode, table)
    failures = [r for r in report.invariants if r.rule == rule and not r.holds]
    assert failures, f"{rule} not reported in {mode}; violated: {sorted(violated_rules(report))}"
    for failure in failures:
        assert failure.counterexample is not None
        replay_reaches_violation(mode, CompiledTable(rows, forbidden), rule, failure.counterexample)
    shortest = min(len(f.counterexample or []) for f in failures)
    assert shortest == length, [f.counterexample for f in failures]
    return report


def assert_clean(mode: Mode, rows: Rows, forbidden: Forbidden | None = None) -> None:
    report = explore(mode, CompiledTable(rows, forbidden))
    assert report.ok, [(r.rule, r.counterexample) for r in report.violations()]


# --------------------------------------------------------------------------- the real table


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_unmutated_table_holds_every_invariant(mode: Mode) -> None:
    """The baseline: the shipped table violates nothing, so every report
    below is caused by its mutation alone."""
    report = explore(mode)
    assert report.ok, [(r.rule, r.counterexample) for r in report.violations()]
    assert all(r.holds and r.counterexample is None for r in report.invariants)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_every_mode_checks_at_least_nine_invariants(mode: Mode) -> None:
    """An explorer that silently checked little would prove little."""
    report = explore(mode)
    assert len(report.invariants) >= 9
    ids = {r.rule for r in report.invariants}
    assert {DONE_REACHABLE, TABLE_WELL_FORMED, "ABORT-ONCE", "DECODE-DEFER", "DECODE-TIE"} <= ids


def test_decode_explores_more_states_than_aggregated() -> None:
    """CancelPending exists only in decode, so decode's reachable graph is
    strictly larger; equal sizes would mean the deferral is not modelled."""
    assert explore(Mode.DECODE).states > explore(Mode.AGGREGATED).states


# --------------------------------------------------------------------------- abort timing


def test_decode_aborting_at_once_on_stop_breaks_decode_defer() -> None:
    """Bug: decode calls abort on the stop itself (orphans the KV transfer).
    Minimum 2: the stream must exist (setup) before the Streaming row fires
    (stop); a stop in Idle is only recorded."""
    rows = mutate(STREAMING, EventKind.STOP, "decode, before first-token", actions=(ABORT,))
    assert_caught(Mode.DECODE, rows, "DECODE-DEFER", 2)


def test_decode_aborting_at_once_is_invisible_outside_decode() -> None:
    """The deferred row's guard never holds outside decode, so other modes
    must stay clean: the explorer does not report phantom bugs."""
    rows = mutate(STREAMING, EventKind.STOP, "decode, before first-token", actions=(ABORT,))
    assert_clean(Mode.AGGREGATED, rows)


def test_decode_deferring_after_first_token_breaks_abort_immediate() -> None:
    """Bug: a decode request that already has its first token still defers the
    abort (the engine keeps decoding for a client that left).  Minimum 3:
    setup, token_chunk (first-token), stop."""
    rows = mutate(
        STREAMING, EventKind.STOP, "not decode or first-token seen", target=ControlState.STREAMING, actions=()
    )
    assert_caught(Mode.DECODE, rows, "ABORT-IMMEDIATE", 3)


def test_second_stop_aborting_again_breaks_abort_once() -> None:
    """Bug: every stop calls abort.  Minimum 3 in agg: setup, stop (first
    abort, Aborted), stop (second abort)."""
    rows = mutate(ABORTED, EventKind.STOP, actions=(ABORT,), ignored=False, rule="ABORT-ONCE")
    assert_caught(Mode.AGGREGATED, rows, "ABORT-ONCE", 3)


def test_second_stop_aborting_again_needs_four_events_in_decode() -> None:
    """In decode, Aborted needs first-token too: setup, stop, token_chunk
    (abort), stop; or first_token, stop, setup (abort), stop.  Minimum 4."""
    rows = mutate(ABORTED, EventKind.STOP, actions=(ABORT,), ignored=False, rule="ABORT-ONCE")
    assert_caught(Mode.DECODE, rows, "ABORT-ONCE", 4)


def test_tokenless_chunk_releasing_the_abort_breaks_decode_defer() -> None:
    """Bug: an SGLang bootstrap chunk (no tokens) is taken as first-token and
    releases the abort.  The model only records first-token from events that
    carry it, so the step aborts with first-token still unseen: DECODE-DEFER
    (DECODE-FIRST-TOKEN cannot fire, first_token stays false).  Minimum 3:
    setup, stop (CancelPending), empty_chunk."""
    rows = mutate(CANCEL_PENDING, EventKind.EMPTY_CHUNK, target=ABORTED, actions=(ABORT, FWD))
    report = assert_caught(Mode.DECODE, rows, "DECODE-DEFER", 3)
    assert "DECODE-FIRST-TOKEN" not in violated_rules(report)
    assert_clean(Mode.AGGREGATED, rows)


def test_notice_not_releasing_the_abort_breaks_decode_defer() -> None:
    """Bug: the side-channel notice is noted but the deferred abort never
    fires (TRT-LLM requests cannot be cancelled).  Minimum 3: setup, stop,
    first_token."""
    rows = mutate(CANCEL_PENDING, EventKind.FIRST_TOKEN_NOTICE, target=None, actions=())
    assert_caught(Mode.DECODE, rows, "DECODE-DEFER", 3)


def test_drop_calling_abort_breaks_abort_needs_cancel() -> None:
    """Bug: a silent consumer drop aborts the engine.  Minimum 2: setup, drop
    (drop is forbidden in Idle)."""
    rows = mutate(STREAMING, EventKind.DROP, actions=(ABORT, STOP_READING, RELEASE))
    assert_caught(Mode.AGGREGATED, rows, "ABORT-NEEDS-CANCEL", 2)


def test_drop_in_cancel_pending_calling_abort_breaks_decode_drop() -> None:
    """Bug: the stream going away releases the deferred abort (the seed's
    drop_token arm aborting).  Minimum 3: setup, stop, drop."""
    rows = mutate(CANCEL_PENDING, EventKind.DROP, actions=(ABORT, STOP_READING, RELEASE))
    assert_caught(Mode.DECODE, rows, "DECODE-DROP", 3)


def test_tie_resolving_to_no_abort_breaks_decode_tie() -> None:
    """Bug: an unbiased select lets stream-end win over first-token, so a
    terminal carrying the first tokens ends the request with no abort.
    Minimum 3: setup, stop, terminal with tokens."""
    rows = mutate(CANCEL_PENDING, EventKind.TERMINAL, "carries tokens", actions=(FWD, STOP_READING, RELEASE))
    assert_caught(Mode.DECODE, rows, "DECODE-TIE", 3)


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE], ids=str)
def test_aggregated_deferring_breaks_abort_immediate(mode: Mode) -> None:
    """Bug: the mode check is lost and every mode defers until first-token,
    so a prefill keeps running after its client left (#13691).  Minimum 2:
    setup, stop leaves a cancelled live request without an abort."""
    before_first = Guard("before first-token", lambda s, e: not s.first_token)
    after_first = Guard("first-token seen", lambda s, e: s.first_token)
    rows = mutate(STREAMING, EventKind.STOP, "decode, before first-token", guard=before_first)
    rows = mutate(STREAMING, EventKind.STOP, "not decode or first-token seen", rows, guard=after_first)
    assert_caught(mode, rows, "ABORT-IMMEDIATE", 2)
    # In decode the two guards mean the same as before: nothing to report.
    assert_clean(Mode.DECODE, rows)


def test_setup_failure_calling_abort_breaks_setup_failure_rule() -> None:
    """Bug: a failed generate still calls abort.  Minimum 1: setup_failed."""
    rows = mutate(IDLE, EventKind.SETUP_FAILED, actions=(SETUP_ERR, ABORT))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-SETUP-FAILURE", 1)


def test_stop_after_done_calling_abort_breaks_abort_needs_cancel() -> None:
    """Bug: a late stop on a finished request aborts the engine.  Minimum 2:
    setup_failed (Done in one event), stop."""
    rows = mutate(DONE, EventKind.STOP, actions=(ABORT,), ignored=False)
    assert_caught(Mode.AGGREGATED, rows, "ABORT-NEEDS-CANCEL", 2)


def test_stop_before_setup_not_recorded_breaks_cancel_observed() -> None:
    """Bug: a stop that arrives during setup is forgotten (the request then
    runs to completion unaborted).  Minimum 1: stop."""
    rows = mutate(IDLE, EventKind.STOP, "not cancelled", effects=())
    assert_caught(Mode.AGGREGATED, rows, "CANCEL-OBSERVED", 1)


# --------------------------------------------------------------------------- the stream


def test_chunk_after_terminal_forwarded_breaks_terminal_last() -> None:
    """Bug: the adapter keeps reading after the terminal and forwards what
    follows.  Minimum 2, not 3: Done is reached in one event by setup_failed,
    and a token_chunk then forwards after the stream ended."""
    extra = Transition((DONE,), EventKind.TOKEN_CHUNK, row_for(STREAMING, EventKind.TOKEN_CHUNK).guard, None,
                       (FWD,), "STREAM-FORWARD-ORDER")
    forbidden = {key: rule for key, rule in FORBIDDEN.items() if key != (DONE, EventKind.TOKEN_CHUNK)}
    rows = (*REQUEST_TABLE, extra)
    assert_caught(Mode.AGGREGATED, rows, "STREAM-TERMINAL-LAST", 2, forbidden)
    assert_caught(Mode.AGGREGATED, rows, "DONE-ABSORBING", 2, forbidden)


def test_terminal_without_stop_reading_breaks_terminal_last() -> None:
    """Bug: the adapter forwards the terminal but keeps polling the engine.
    Minimum 2: setup, terminal."""
    rows = mutate(STREAMING, EventKind.TERMINAL, actions=(FWD, RELEASE))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-TERMINAL-LAST", 2)


def test_cancelled_terminal_swallowed_after_abort_breaks_cancelled_terminal() -> None:
    """Bug: after abort, the engine's 'cancelled' terminal is dropped instead
    of forwarded (the seed's terminal-cancel test).  Minimum 3: setup, stop
    (Aborted), terminal:cancelled."""
    is_cancelled = Guard("cancelled", lambda s, e: e.finish_reason is FinishReason.CANCELLED)
    other = Guard("not cancelled", lambda s, e: e.finish_reason is not FinishReason.CANCELLED)
    rows = mutate(ABORTED, EventKind.TERMINAL, guard=is_cancelled, actions=(STOP_READING, RELEASE))
    rows = (*rows, replace(row_for(ABORTED, EventKind.TERMINAL), sources=(ABORTED,), guard=other))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-CANCELLED-TERMINAL", 3)


def test_empty_chunk_not_forwarded_breaks_forward_order() -> None:
    """Bug: token-less chunks are swallowed instead of forwarded.  Minimum 2:
    setup, empty_chunk."""
    rows = mutate(STREAMING, EventKind.EMPTY_CHUNK, actions=())
    assert_caught(Mode.AGGREGATED, rows, "STREAM-FORWARD-ORDER", 2)


def test_end_inventing_a_terminal_breaks_end_without_terminal() -> None:
    """Bug: a stream that just ends gets a made-up terminal forwarded.
    Minimum 2: setup, end."""
    rows = mutate(STREAMING, EventKind.END, actions=(FWD, RELEASE))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-END-WITHOUT-TERMINAL", 2)


def test_setup_not_starting_the_watch_breaks_stream_setup() -> None:
    """Bug: the cancellation monitor is never spawned.  Minimum 1: setup."""
    rows = mutate(IDLE, EventKind.SETUP, "not cancelled", effects=())
    assert_caught(Mode.AGGREGATED, rows, "STREAM-SETUP", 1)
    assert_caught(Mode.AGGREGATED, rows, "WATCH-RELEASED", 1)


# --------------------------------------------------------------------------- teardown and shape


def test_terminal_not_releasing_watch_breaks_watch_released() -> None:
    """Bug: the monitor outlives the request (its guard is leaked).
    Minimum 2: setup, terminal."""
    rows = mutate(STREAMING, EventKind.TERMINAL, actions=(FWD, STOP_READING))
    assert_caught(Mode.AGGREGATED, rows, "WATCH-RELEASED", 2)


def test_row_leaving_done_breaks_done_absorbing() -> None:
    """Bug: a late stop revives a finished request.  Minimum 2:
    setup_failed (Done), stop."""
    rows = mutate(DONE, EventKind.STOP, target=STREAMING, ignored=False)
    assert_caught(Mode.AGGREGATED, rows, "DONE-ABSORBING", 2)


def test_missing_row_breaks_table_well_formed() -> None:
    """A typed error while the abort is deferred has no row: the machine
    would crash on it.  Minimum 3: setup, stop, error; invisible in agg, where
    CancelPending is unreachable."""
    rows = remove(CANCEL_PENDING, EventKind.ERROR)
    assert_caught(Mode.DECODE, rows, TABLE_WELL_FORMED, 3)
    assert_clean(Mode.AGGREGATED, rows)


def test_overlapping_rows_break_table_well_formed() -> None:
    """Two rows that both match a token chunk make the machine ambiguous.
    Minimum 2: setup, token_chunk."""
    duplicate = replace(row_for(STREAMING, EventKind.TOKEN_CHUNK), sources=(STREAMING,), actions=())
    rows = (*REQUEST_TABLE, duplicate)
    assert_caught(Mode.AGGREGATED, rows, TABLE_WELL_FORMED, 2)


def test_aborted_waiting_forever_breaks_done_reachable() -> None:
    """Bug: after abort the adapter refuses every stream ending (it waits for
    something that never comes).  Every event allowed in Aborted stays in
    Aborted, so Done is unreachable.  Minimum 2: setup, stop reaches Aborted."""
    rows: Rows = REQUEST_TABLE
    forbidden = dict(FORBIDDEN)
    for kind in (EventKind.TERMINAL, EventKind.ERROR, EventKind.END, EventKind.DROP):
        rows = remove(ABORTED, kind, rows=rows)
        forbidden[(ABORTED, kind)] = "STREAM-EVENT-ORDER"
    report = assert_caught(Mode.AGGREGATED, rows, DONE_REACHABLE, 2, forbidden)
    # A state nothing leaves but by loops is also a fair run that never ends.
    assert violated_rules(report) == {DONE_REACHABLE, "DONE-EVENTUALLY"}


# --------------------------------------------------------------------------- tables stay apart


def test_a_table_never_answers_with_another_tables_cached_step() -> None:
    """A state produced by one table and stepped on another must follow the
    second table's rows; otherwise a mutant checked after the shipped table
    reports wrong (longer or missing) counterexamples and replays lie.
    Fresh tables are used so the shipped DEFAULT_TABLE is never poisoned."""
    rows = mutate(STREAMING, EventKind.DROP, actions=(ABORT, STOP_READING, RELEASE))
    shipped, mutant = CompiledTable(), CompiledTable(rows)
    streaming = shipped.step(shipped.initial(Mode.AGGREGATED), parse_event("setup")).after
    shipped.step(streaming, parse_event("drop"))  # caches the shipped answer on the state object
    assert ABORT in mutant.step(streaming, parse_event("drop")).actions


# --------------------------------------------------------------------------- blind spots closed by judging actions


def test_ignored_stop_calling_abort_breaks_ignored_changes_nothing() -> None:
    """Bug: a late stop that the table records as ignored still calls abort.
    The state is left as it was, so the abort count in the state never sees
    the second abort; only the step's actions show it.  Minimum 3 in agg:
    setup, stop (the first abort), stop."""
    rows = mutate(ABORTED, EventKind.STOP, actions=(ABORT,))
    assert_caught(Mode.AGGREGATED, rows, "IGNORED-CHANGES-NOTHING", 3)
    assert_caught(Mode.AGGREGATED, rows, "ABORT-ONCE", 3)


def test_reversed_actions_break_actions_in_order() -> None:
    """Bug: the terminal's actions run backwards, so the watch is released and
    reading stops before the terminal reaches the client.  Minimum 2: setup,
    terminal."""
    rows = mutate(STREAMING, EventKind.TERMINAL, actions=(RELEASE, STOP_READING, FWD))
    assert_caught(Mode.AGGREGATED, rows, "ACTIONS-IN-ORDER", 2)


def test_released_chunk_forwarded_before_the_abort_breaks_actions_in_order() -> None:
    """Bug: the chunk that releases a deferred abort is forwarded before abort
    is called.  Minimum 3: setup, stop (CancelPending), token_chunk."""
    rows = mutate(CANCEL_PENDING, EventKind.TOKEN_CHUNK, actions=(FWD, ABORT))
    assert_caught(Mode.DECODE, rows, "ACTIONS-IN-ORDER", 3)


_SHORTEST_TO = {IDLE: 0, STREAMING: 1, CANCEL_PENDING: 2, ABORTED: 2, DONE: 1}
"""Events needed to reach each state: setup; setup, stop; setup_failed for Done."""


@pytest.mark.parametrize(("key", "rule"), sorted(FORBIDDEN.items(), key=str), ids=str)
def test_forbidden_event_ignored_instead_of_refused_is_caught(key: tuple[ControlState, EventKind], rule: str) -> None:
    """Bug: an event the protocol forbids (STREAM-EVENT-ORDER, or an engine item
    after Done under STREAM-TERMINAL-LAST) is quietly ignored instead of refused,
    so a trace with a chunk before setup or a second setup would pass.  The
    minimum is the path to the state plus the event itself."""
    state, kind = key
    forbidden = {other: why for other, why in FORBIDDEN.items() if other != key}
    rows = (*REQUEST_TABLE, Transition((state,), kind, Guard("always", lambda s, e: True), None, (), rule,
                                       ignored=True))
    mode = Mode.DECODE if state is CANCEL_PENDING else Mode.AGGREGATED
    assert_caught(mode, rows, rule, _SHORTEST_TO[state] + 1, forbidden)


def test_drop_without_stop_reading_breaks_stream_drop() -> None:
    """Bug: a dropped stream releases the watch but the engine is still read
    (and keeps generating for nobody).  Minimum 2: setup, drop."""
    rows = mutate(STREAMING, EventKind.DROP, actions=(RELEASE,))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-DROP", 2)


def test_notice_ending_the_request_breaks_done_when_ended() -> None:
    """Bug: in Idle a first-token notice (ignored outside decode) ends the
    request, so the stream that setup would bring is never forwarded.
    Minimum 1: first_token."""
    rows = mutate(IDLE, EventKind.FIRST_TOKEN_NOTICE, "not decode or first-token seen", target=DONE, ignored=False)
    assert_caught(Mode.AGGREGATED, rows, "DONE-WHEN-ENDED", 1)


def test_stop_ending_the_request_breaks_done_when_ended() -> None:
    """Bug: a stop ends the request at once, dropping the engine's cancelled
    terminal.  Minimum 2: setup, stop."""
    rows = mutate(STREAMING, EventKind.STOP, "not decode or first-token seen", target=DONE)
    assert_caught(Mode.AGGREGATED, rows, "DONE-WHEN-ENDED", 2)


def test_notice_not_noted_breaks_decode_first_token() -> None:
    """Bug: the side-channel notice is accepted but not recorded, so a later
    stop defers an abort that should fire at once.  The old invariant only
    checked that nothing else notes first-token.  Minimum 1: first_token."""
    rows = mutate(IDLE, EventKind.FIRST_TOKEN_NOTICE, "decode, before first-token", effects=())
    assert_caught(Mode.DECODE, rows, "DECODE-FIRST-TOKEN", 1)


def test_setup_error_returned_mid_stream_breaks_setup_failure() -> None:
    """Bug: a token chunk also returns a setup error to generate's caller.
    Minimum 2: setup, token_chunk."""
    rows = mutate(STREAMING, EventKind.TOKEN_CHUNK, actions=(FWD, SETUP_ERR))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-SETUP-FAILURE", 2)


def test_watch_released_before_setup_breaks_watch_released() -> None:
    """Bug: a stop before setup releases a watch nobody holds (a double
    release once the request ends).  Minimum 1: stop."""
    rows = mutate(IDLE, EventKind.STOP, "not cancelled", actions=(RELEASE,))
    assert_caught(Mode.AGGREGATED, rows, "WATCH-RELEASED", 1)


def test_reading_stopped_mid_stream_breaks_terminal_last() -> None:
    """Bug: a token-less chunk stops reading, losing everything after it.
    Minimum 2: setup, empty_chunk."""
    rows = mutate(STREAMING, EventKind.EMPTY_CHUNK, actions=(FWD, STOP_READING))
    assert_caught(Mode.AGGREGATED, rows, "STREAM-TERMINAL-LAST", 2)


def test_disconnect_treated_as_a_silent_drop_breaks_runtime_disconnect_kills() -> None:
    """Bug: the seed's reading, a client that goes away never aborts, applied to the real
    runtime's disconnect (which the worker sees as a kill).  Minimum 2: setup, disconnect."""
    rows = mutate(STREAMING, EventKind.DISCONNECT, "not decode or first-token seen", target=None, actions=(),
                  effects=())
    assert_caught(Mode.AGGREGATED, rows, "RUNTIME-DISCONNECT-KILLS", 2)
