"""Unit tests of the request machine: one protocol behaviour per test.

Expected actions are derived from the protocol (PROTOCOL-NOTES.md and the
seed's ``adapter.rs``), not from running the table.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import (
    ALL_EVENTS,
    DEFAULT_TABLE,
    FORBIDDEN,
    RULES,
    ActionKind,
    BackendError,
    CancelCause,
    ControlState,
    DynamoError,
    EventKind,
    FinishReason,
    Mode,
    ProtocolViolation,
    RequestMachine,
    StreamEnd,
    UnknownEvent,
    event,
    parse_event,
)
from dynamo_backend_protocol.model.machine import step_record
from model_helpers import ABORT, ERR, FWD, RELEASE, SETUP_ERR, STOP_READING, run

NOT_DECODE = [m for m in Mode if m is not Mode.DECODE]


def fire(machine: RequestMachine, name: str) -> tuple[ActionKind, ...]:
    return machine.fire(parse_event(name))


def where(machine: RequestMachine) -> ControlState:
    """The control state (a call, so the type checker does not pin it between events)."""
    return machine.control


def total_aborts(machine: RequestMachine) -> int:
    return sum(step.actions.count(ABORT) for step in machine.history)


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_happy_path_forwards_every_chunk_and_never_aborts(mode: Mode) -> None:
    """A request that completes normally forwards each chunk once, stops reading
    after the terminal, releases the watch, and never calls engine.abort
    (seed: adapter_maps_chunks_to_outputs, in every mode)."""
    m = RequestMachine(mode)
    assert where(m) is ControlState.IDLE
    assert fire(m, "setup") == ()
    assert where(m) is ControlState.STREAMING
    assert m.state.watching
    assert fire(m, "token_chunk") == (FWD,)
    assert fire(m, "terminal:length+tokens") == (FWD, STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert m.state.ended is StreamEnd.TERMINAL
    assert not m.state.watching
    assert total_aborts(m) == 0


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_typed_error_is_forwarded_as_error_item_and_ends_stream(mode: Mode) -> None:
    """A typed mid-stream error becomes an error item (kind preserved) and
    nothing is read after it (seed: typed mid-stream error test)."""
    m = run(mode, ["setup", "token_chunk"])
    assert fire(m, "error") == (ERR, STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert m.state.ended is StreamEnd.ERROR


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_stream_end_without_terminal_invents_nothing(mode: Mode) -> None:
    """An engine stream that just ends finishes the request without forwarding
    a made-up terminal and without aborting."""
    m = run(mode, ["setup", "token_chunk"])
    assert fire(m, "end") == (RELEASE,)
    assert where(m) is ControlState.DONE
    assert m.state.ended is StreamEnd.EXHAUSTED
    assert total_aborts(m) == 0


# --------------------------------------------------------------------------- immediate abort


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
@pytest.mark.parametrize("cancel", ["stop", "kill"])
def test_non_decode_aborts_in_the_step_that_observes_cancellation(mode: Mode, cancel: str) -> None:
    """Outside decode, stop or kill fires engine.abort at once, before any
    further chunk (seed: aggregated_fires_abort_immediately)."""
    m = run(mode, ["setup"])
    assert fire(m, cancel) == (ABORT,)
    assert where(m) is ControlState.ABORTED
    assert m.state.cancel is CancelCause(cancel)


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
def test_cancelled_terminal_after_abort_is_forwarded(mode: Mode) -> None:
    """After abort the engine ends with a 'cancelled' terminal, which still
    reaches downstream (seed: adapter_forwards_terminal_cancel_chunk_to_downstream)."""
    m = run(mode, ["setup", "token_chunk", "stop"])
    assert fire(m, "terminal:cancelled") == (FWD, STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert total_aborts(m) == 1


def test_decode_after_first_token_aborts_at_once() -> None:
    """Once a decode request has produced a token its KV transfer is done, so a
    stop aborts immediately, like aggregated mode."""
    m = run(Mode.DECODE, ["setup", "token_chunk"])
    assert fire(m, "stop") == (ABORT,)
    assert where(m) is ControlState.ABORTED


# --------------------------------------------------------------------------- decode deferral


def test_decode_stop_before_first_token_defers_the_abort() -> None:
    """Aborting a decode request before first-token orphans the prefill peer's
    KV transfer (PR #8624), so the stop only moves it to CancelPending."""
    m = run(Mode.DECODE, ["setup"])
    assert fire(m, "stop") == ()
    assert where(m) is ControlState.CANCEL_PENDING
    assert m.state.cancel is CancelCause.STOP
    assert m.state.aborts == 0


def test_decode_token_chunk_releases_deferred_abort_then_forwards() -> None:
    """The first chunk with tokens releases the deferred abort: abort fires,
    exactly once, and the chunk itself is still forwarded
    (seed: decode_defers_abort_until_first_chunk)."""
    m = run(Mode.DECODE, ["setup", "stop"])
    assert fire(m, "token_chunk") == (ABORT, FWD)
    assert where(m) is ControlState.ABORTED
    assert m.state.first_token
    assert fire(m, "token_chunk") == (FWD,)
    assert total_aborts(m) == 1


def test_decode_tokenless_chunk_does_not_release_deferred_abort() -> None:
    """A chunk without token ids (SGLang's bootstrap handshake) is forwarded but
    is not first-token: the abort stays deferred."""
    m = run(Mode.DECODE, ["setup", "stop"])
    assert fire(m, "empty_chunk") == (FWD,)
    assert where(m) is ControlState.CANCEL_PENDING
    assert not m.state.first_token
    assert m.state.aborts == 0


def test_decode_tokenless_chunk_before_stop_does_not_count_as_first_token() -> None:
    """An empty chunk seen before the stop must not make a later stop abort at once."""
    m = run(Mode.DECODE, ["setup", "empty_chunk"])
    assert fire(m, "stop") == ()
    assert where(m) is ControlState.CANCEL_PENDING


def test_decode_side_channel_notice_releases_deferred_abort() -> None:
    """notify_first_token() from a side channel (TRT-LLM style) releases the
    deferred abort without any chunk (seed: decode_side_channel_hook_releases_deferred_abort)."""
    m = run(Mode.DECODE, ["setup", "stop"])
    assert fire(m, "first_token") == (ABORT,)
    assert where(m) is ControlState.ABORTED
    assert m.state.first_token


def test_decode_notice_during_setup_then_stop_aborts_at_setup() -> None:
    """A notice sent while the engine is still setting up counts: a stop that
    also arrives before setup then aborts as soon as the stream exists."""
    m = RequestMachine(Mode.DECODE)
    assert fire(m, "first_token") == ()
    assert m.state.first_token
    assert m.history[-1].ignored is False
    assert fire(m, "stop") == ()
    assert where(m) is ControlState.IDLE
    assert fire(m, "setup") == (ABORT,)
    assert where(m) is ControlState.ABORTED


def test_decode_notice_after_first_token_is_ignored() -> None:
    """notify_first_token() is idempotent: a second notice changes nothing."""
    m = run(Mode.DECODE, ["setup", "first_token"])
    before = m.state
    assert fire(m, "first_token") == ()
    assert m.history[-1].ignored
    assert m.state == before


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
def test_notice_outside_decode_is_a_no_op(mode: Mode) -> None:
    """notify_first_token() is a no-op outside decode mode and is recorded as ignored."""
    m = run(mode, ["setup"])
    before = m.state
    assert fire(m, "first_token") == ()
    assert m.history[-1].ignored
    assert m.state == before


@pytest.mark.parametrize("reason", list(FinishReason), ids=str)
def test_decode_tie_terminal_with_tokens_in_cancel_pending_aborts(reason: FinishReason) -> None:
    """First-token and stream end in the same step: first-token wins (the
    seed's ``biased`` select), so abort fires once, then the terminal is
    forwarded, reading stops and the watch is released."""
    m = run(Mode.DECODE, ["setup", "stop"])
    actions = m.fire(event(EventKind.TERMINAL, reason, with_tokens=True))
    assert actions == (ABORT, FWD, STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert m.state.aborts == 1
    assert not m.state.watching


@pytest.mark.parametrize("reason", list(FinishReason), ids=str)
def test_decode_terminal_without_tokens_in_cancel_pending_drops_abort(reason: FinishReason) -> None:
    """A token-less terminal ends the stream before first-token: the deferred
    abort is dropped, the terminal still forwarded."""
    m = run(Mode.DECODE, ["setup", "stop"])
    actions = m.fire(event(EventKind.TERMINAL, reason, with_tokens=False))
    assert actions == (FWD, STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert m.state.aborts == 0


def test_decode_drop_in_cancel_pending_does_not_abort() -> None:
    """A stream dropped while the abort is deferred never aborts
    (seed: decode_stream_drop_without_first_token_does_not_abort)."""
    m = run(Mode.DECODE, ["setup", "stop"])
    assert fire(m, "drop") == (STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert m.state.ended is StreamEnd.DROPPED
    assert total_aborts(m) == 0


@pytest.mark.parametrize("ending", ["error", "end"])
def test_decode_stream_ending_in_cancel_pending_does_not_abort(ending: str) -> None:
    """A typed error or plain end before first-token also drops the deferred abort."""
    m = run(Mode.DECODE, ["setup", "stop", ending])
    assert where(m) is ControlState.DONE
    assert total_aborts(m) == 0


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_silent_drop_never_aborts(mode: Mode) -> None:
    """A consumer that goes away without stop/kill never causes an abort."""
    m = run(mode, ["setup", "token_chunk"])
    assert fire(m, "drop") == (STOP_READING, RELEASE)
    assert where(m) is ControlState.DONE
    assert total_aborts(m) == 0


# --------------------------------------------------------------------------- stop before setup


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
def test_stop_before_setup_is_recorded_then_aborts_at_setup(mode: Mode) -> None:
    """The monitor is spawned after setup and sees an earlier stop at once, so
    a non-decode request aborts in the setup step."""
    m = RequestMachine(mode)
    assert fire(m, "stop") == ()
    assert where(m) is ControlState.IDLE
    assert m.state.cancel is CancelCause.STOP
    assert fire(m, "setup") == (ABORT,)
    assert where(m) is ControlState.ABORTED


def test_decode_stop_before_setup_defers_at_setup() -> None:
    """In decode the early stop is deferred at setup, not acted on."""
    m = run(Mode.DECODE, ["stop"])
    assert fire(m, "setup") == ()
    assert where(m) is ControlState.CANCEL_PENDING
    assert fire(m, "token_chunk") == (ABORT, FWD)


# --------------------------------------------------------------------------- setup failure


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_setup_failure_only_returns_the_error(mode: Mode) -> None:
    """A failing generate is returned as that error: no stream, no abort, no watch."""
    m = RequestMachine(mode)
    assert fire(m, "setup_failed") == (SETUP_ERR,)
    assert where(m) is ControlState.DONE
    assert m.state.ended is StreamEnd.SETUP_FAILED
    assert not m.state.watching
    assert not m.state.forwarded


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_setup_failure_after_early_stop_does_not_abort(mode: Mode) -> None:
    """Even with a stop already observed, a failed setup never calls abort:
    the monitor only exists once the stream does."""
    m = run(mode, ["stop"])
    assert fire(m, "setup_failed") == (SETUP_ERR,)
    assert total_aborts(m) == 0


# --------------------------------------------------------------------------- ignored events


@pytest.mark.parametrize("late", ["stop", "kill", "first_token", "drop"])
def test_events_after_done_are_ignored_and_recorded(late: str) -> None:
    """Done is absorbing: a late stop, kill, notice or drop does nothing but is
    still kept in the history, marked ignored."""
    m = run(Mode.AGGREGATED, ["setup", "terminal:stop"])
    before = m.state
    assert fire(m, late) == ()
    assert m.state == before
    assert len(m.history) == 3
    assert m.history[-1].ignored
    assert m.history[-1].event is parse_event(late)


def test_second_notice_is_ignored_and_recorded() -> None:
    """A second notify_first_token() in decode is recorded as ignored."""
    m = run(Mode.DECODE, ["first_token", "first_token"])
    assert [step.ignored for step in m.history] == [False, True]


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_kill_after_stop_is_ignored(mode: Mode) -> None:
    """Cancellation is observed once; a kill after a stop neither aborts again
    nor changes the recorded cause."""
    m = run(mode, ["setup", "stop"])
    state = m.state
    assert fire(m, "kill") == ()
    assert m.history[-1].ignored
    assert m.state == state
    assert m.state.cancel is CancelCause.STOP


def test_kill_after_stop_before_setup_is_ignored() -> None:
    """The once-only rule also holds before the stream exists."""
    m = run(Mode.AGGREGATED, ["stop", "kill"])
    assert m.history[-1].ignored
    assert m.state.cancel is CancelCause.STOP


def test_repeated_stop_after_abort_aborts_only_once() -> None:
    """engine.abort is called exactly once however many stops arrive
    (seed: adapter_cancellation_triggers_engine_abort)."""
    m = run(Mode.AGGREGATED, ["setup", "stop", "stop", "kill", "token_chunk", "stop", "terminal:cancelled"])
    assert total_aborts(m) == 1


# --------------------------------------------------------------------------- forbidden events


def test_token_chunk_in_idle_is_a_violation_naming_state_event_rule() -> None:
    """An engine item before the stream exists is a protocol violation; the
    message names the state, the event and the rule so a user can look it up."""
    m = RequestMachine(Mode.AGGREGATED)
    with pytest.raises(ProtocolViolation) as info:
        fire(m, "token_chunk")
    message = str(info.value)
    assert "Idle" in message
    assert "token_chunk" in message
    assert "STREAM-EVENT-ORDER" in message
    assert info.value.rule == "STREAM-EVENT-ORDER"


def test_violation_leaves_machine_untouched() -> None:
    """A rejected event must not change the state nor enter the history."""
    m = run(Mode.AGGREGATED, ["setup", "terminal:stop"])
    state, steps = m.state, len(m.history)
    with pytest.raises(ProtocolViolation):
        fire(m, "token_chunk")
    assert m.state is state
    assert len(m.history) == steps


def test_token_chunk_after_done_violates_terminal_last() -> None:
    """Nothing may follow a terminal: an item after it names STREAM-TERMINAL-LAST."""
    m = run(Mode.AGGREGATED, ["setup", "terminal:stop"])
    with pytest.raises(ProtocolViolation) as info:
        fire(m, "token_chunk")
    message = str(info.value)
    assert "Done" in message
    assert "token_chunk" in message
    assert "STREAM-TERMINAL-LAST" in message
    assert info.value.rule == "STREAM-TERMINAL-LAST"


def test_setup_twice_is_a_violation() -> None:
    """The stream is set up once; a second setup names the live state and rule."""
    m = run(Mode.DECODE, ["setup"])
    with pytest.raises(ProtocolViolation) as info:
        fire(m, "setup")
    message = str(info.value)
    assert "Streaming" in message
    assert "'setup'" in message
    assert "STREAM-EVENT-ORDER" in message


def test_violation_message_carries_rule_summary() -> None:
    """The message includes the rule's one-line summary, not just its ID."""
    m = RequestMachine(Mode.AGGREGATED)
    with pytest.raises(ProtocolViolation) as info:
        fire(m, "drop")
    assert RULES["STREAM-EVENT-ORDER"] in str(info.value)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_allowed_agrees_with_forbidden_table_in_every_state(mode: Mode) -> None:
    """allowed() says no exactly for the (state, event kind) pairs the protocol
    forbids, and asking does not move the machine."""
    prefixes: dict[ControlState, list[str]] = {
        ControlState.IDLE: [],
        ControlState.STREAMING: ["setup"],
        ControlState.ABORTED: ["setup", "token_chunk", "stop"],
        ControlState.DONE: ["setup", "end"],
    }
    if mode is Mode.DECODE:
        prefixes[ControlState.CANCEL_PENDING] = ["setup", "stop"]
    for control, names in prefixes.items():
        m = run(mode, names)
        assert where(m) is control
        state = m.state
        for ev in ALL_EVENTS:
            assert m.allowed(ev) == ((control, ev.kind) not in FORBIDDEN), (control, ev)
        assert m.state is state
        assert len(m.history) == len(names)


# --------------------------------------------------------------------------- history and records


def test_history_records_every_step_with_its_rule() -> None:
    """Each fired event is kept, in order, with the rule that decided it, so a
    trace explains why abort was (not) called."""
    m = run(Mode.DECODE, ["setup", "stop", "empty_chunk", "token_chunk"])
    assert [step.event.name for step in m.history] == ["setup", "stop", "empty_chunk", "token_chunk"]
    assert m.history[1].rule == "DECODE-DEFER"
    assert m.history[3].rule == "DECODE-DEFER"
    assert all(step.rule in RULES for step in m.history)
    for earlier, later in zip(m.history, m.history[1:], strict=False):
        assert earlier.after == later.before


def test_step_record_is_a_plain_trace_line() -> None:
    """The JSON Lines record names request, mode, event, resulting state,
    actions, rule and whether it was ignored."""
    m = run(Mode.DECODE, ["setup", "stop", "token_chunk"])
    record = step_record(m.history[-1], "req-1")
    assert record == {
        "request": "req-1",
        "mode": "decode",
        "event": "token_chunk",
        "state": "Aborted",
        "actions": ["call_abort", "forward_data"],
        "rule": "DECODE-DEFER",
        "ignored": False,
    }


def test_compiled_table_step_does_not_mutate_the_state() -> None:
    """Stepping is pure: the source state is unchanged and a new state results."""
    start = DEFAULT_TABLE.initial(Mode.AGGREGATED)
    step = DEFAULT_TABLE.step(start, parse_event("setup"))
    assert start.control is ControlState.IDLE
    assert step.before is start
    assert step.after.control is ControlState.STREAMING


# --------------------------------------------------------------------------- events


def test_parse_event_round_trips_every_event() -> None:
    """Every event's slug parses back to the very same canonical object."""
    for ev in ALL_EVENTS:
        assert parse_event(ev.name) is ev
        assert parse_event(str(ev)) is ev
        assert parse_event(f"  {ev.name}\n") is ev
        assert event(ev.kind, ev.finish_reason, ev.with_tokens) is ev


def test_all_events_are_distinct_and_complete() -> None:
    """ALL_EVENTS has one event per kind, except terminals: one per reason and
    with/without tokens."""
    names = [ev.name for ev in ALL_EVENTS]
    assert len(names) == len(set(names))
    assert len(ALL_EVENTS) == (len(EventKind) - 1) + 2 * len(FinishReason)


@pytest.mark.parametrize(
    ("spelling", "meaning"),
    [
        ("eos", FinishReason.EOS),
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("cancelled", FinishReason.CANCELLED),
        ("abort", FinishReason.CANCELLED),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("error", FinishReason.ERROR),
        ("error: out of memory", FinishReason.ERROR),
        ("error: ", FinishReason.ERROR),
        ("Stop", None),
        ("aborted", None),
        ("error:boom", None),
        (" stop", None),
    ],
)
def test_finish_reasons_parse_as_dynamo_parses_them(spelling: str, meaning: FinishReason | None) -> None:
    """Dynamo's FinishReason is spelled exactly; ``abort`` is cancelled and ``error: <message>``
    is error.  Anything else is no finish reason at all."""
    assert FinishReason.parse(spelling) is meaning


def test_abort_terminal_events_are_the_cancelled_ones() -> None:
    """A trace may name a terminal by Dynamo's alias: ``terminal:abort`` is ``terminal:cancelled``."""
    assert parse_event("terminal:abort") is event(EventKind.TERMINAL, FinishReason.CANCELLED)
    assert parse_event("terminal:abort+tokens") is event(EventKind.TERMINAL, FinishReason.CANCELLED, True)


def test_unknown_event_lists_the_known_events() -> None:
    """A typo in an event name tells the user every valid name."""
    with pytest.raises(UnknownEvent) as info:
        parse_event("token_chunks")
    message = str(info.value)
    assert "token_chunks" in message
    for ev in ALL_EVENTS:
        assert ev.name in message
    assert isinstance(info.value, ValueError)


def test_terminal_event_needs_a_reason() -> None:
    """A terminal without a finish reason is not an event."""
    with pytest.raises(ValueError):
        event(EventKind.TERMINAL)


def test_first_token_signal_is_tokens_or_notice_only() -> None:
    """Only a chunk with tokens, a terminal with tokens or a notice signal first-token."""
    signalling = {ev.name for ev in ALL_EVENTS if ev.signals_first_token}
    expected = {"token_chunk", "first_token"} | {f"terminal:{r.value}+tokens" for r in FinishReason}
    assert signalling == expected


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("agg", Mode.AGGREGATED),
        ("AGG", Mode.AGGREGATED),
        ("aggregated", Mode.AGGREGATED),
        ("  Aggregated\t", Mode.AGGREGATED),
        ("Prefill", Mode.PREFILL),
        (" decode ", Mode.DECODE),
        ("ENCODE", Mode.ENCODE),
    ],
)
def test_mode_parse_is_case_insensitive_trimmed_with_alias(text: str, mode: Mode) -> None:
    """Operators write modes in many ways; all documented spellings work."""
    assert Mode.parse(text) is mode


@pytest.mark.parametrize("text", ["", "disagg", "agg regated", "prefil", "all"])
def test_mode_parse_rejects_unknown_with_invalid_argument(text: str) -> None:
    """A bad mode is a typed InvalidArgument error listing the valid values."""
    with pytest.raises(DynamoError) as info:
        Mode.parse(text)
    assert info.value.kind is BackendError.INVALID_ARGUMENT
    for slug in ("agg", "prefill", "decode", "encode"):
        assert slug in info.value.message
    assert "BackendInvalidArgument" in str(info.value)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_mode_print_parse_round_trip(mode: Mode) -> None:
    """Printing gives the canonical slug and parsing it gives the same mode."""
    assert Mode.parse(str(mode)) is mode
    assert str(mode) == mode.value


@pytest.mark.parametrize("mode", NOT_DECODE)
def test_a_disconnect_aborts_like_a_kill(mode: Mode) -> None:
    """RUNTIME-DISCONNECT-KILLS: a remote client leaving reaches the worker as a kill, so
    outside decode mode it aborts at once and is recorded as a kill, unlike the silent drop."""
    machine = RequestMachine(mode)
    fire(machine, "setup")
    fire(machine, "token_chunk")
    assert fire(machine, "disconnect") == (ABORT,)
    assert machine.state.cancel is CancelCause.KILL


def test_a_decode_disconnect_before_first_token_is_deferred_like_a_kill() -> None:
    """A decode request whose client leaves before first-token must not abort yet (the
    prefill peer's KV transfer is in flight); its first token releases the abort."""
    machine = RequestMachine(Mode.DECODE)
    fire(machine, "setup")
    assert fire(machine, "disconnect") == ()
    assert where(machine) is ControlState.CANCEL_PENDING
    assert ABORT in fire(machine, "token_chunk")
