"""Random event sequences against the pure request machine.

Hypothesis drives a ``RequestMachine`` with one rule per event kind and, after
every step, re-checks the model's own invariants and an independent oracle
written here from the protocol notes (a handful of booleans and counters that
never look at the transition table).  A second, plain ``@given`` test walks
the same oracle through uniformly random allowed events: Hypothesis' stateful
runner disables random subsets of rules per run (swarm testing), which makes
deep decode states such as the first-token/stream-end tie rare, and the walk
covers them reliably.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from dynamo_backend_protocol.model import (
    ALL_EVENTS,
    DEFAULT_TABLE,
    ActionKind,
    CompiledTable,
    ControlState,
    Event,
    EventKind,
    FinishReason,
    Mode,
    ProtocolViolation,
    RequestMachine,
    event,
)
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

ENGINE_ITEMS = frozenset(
    {EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL, EventKind.ERROR, EventKind.END}
)
FORWARDED_ITEMS = frozenset({EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL, EventKind.ERROR})
ENDINGS = frozenset({EventKind.TERMINAL, EventKind.ERROR, EventKind.END, EventKind.DROP})
CANCELS = frozenset({EventKind.STOP, EventKind.KILL, EventKind.DISCONNECT})
"""A remote client going away is delivered as a kill (RUNTIME-DISCONNECT-KILLS)."""
FORWARDS = (ActionKind.FORWARD_DATA, ActionKind.FORWARD_ERROR)

MODES = st.one_of(st.just(Mode.DECODE), st.sampled_from(list(Mode)))
"""Decode, where the deferral lives, is drawn a little over half the time."""


@dataclass
class Oracle:
    """What the adapter must do, from PROTOCOL-NOTES.md alone."""

    mode: Mode
    phase: str = "idle"
    """idle (no stream yet), live, or done."""
    cancelled: bool = False
    first_token: bool = False
    aborts: int = 0
    items: int = 0
    """Chunks and typed errors that arrived while the stream was live."""

    @property
    def decode(self) -> bool:
        return self.mode is Mode.DECODE

    @property
    def deferred(self) -> bool:
        """A decode abort waiting for first-token."""
        return self.phase == "live" and self.decode and self.cancelled and not self.first_token and self.aborts == 0

    def allows(self, ev: Event) -> bool:
        if ev.kind in (EventKind.SETUP, EventKind.SETUP_FAILED):
            return self.phase == "idle"
        if ev.kind in ENGINE_ITEMS:
            return self.phase == "live"
        if ev.kind is EventKind.DROP:
            return self.phase != "idle"  # there is no response stream to drop before setup
        return True  # stop, kill and the notice may come at any time

    def advance(self, ev: Event) -> int:
        """Apply an allowed event; returns how many aborts it must cause."""
        kind = ev.kind
        signals = (
            kind is EventKind.TOKEN_CHUNK
            or (kind is EventKind.TERMINAL and ev.with_tokens)
            or (kind is EventKind.FIRST_TOKEN_NOTICE and self.decode)
        )
        abort = 0
        if self.phase == "idle":
            if kind is EventKind.SETUP:
                self.phase = "live"
                if self.cancelled and (not self.decode or self.first_token):
                    abort = 1  # the monitor starts with the setup and sees the earlier stop
            elif kind is EventKind.SETUP_FAILED:
                self.phase = "done"
            elif kind in CANCELS:
                self.cancelled = True
            elif signals:
                self.first_token = True
        elif self.phase == "live":
            if self.deferred and signals:
                abort = 1  # first-token releases the deferred abort, also in a tie with the stream end
            if kind in CANCELS and not self.cancelled:
                self.cancelled = True
                if not self.decode or self.first_token:
                    abort = 1
            if signals:
                self.first_token = True
            if kind in FORWARDED_ITEMS:
                self.items += 1
            if kind in ENDINGS:
                self.phase = "done"
        self.aborts += abort
        return abort


_PHASE = {
    ControlState.IDLE: "idle",
    ControlState.STREAMING: "live",
    ControlState.CANCEL_PENDING: "live",
    ControlState.ABORTED: "live",
    ControlState.DONE: "done",
}


@dataclass
class Request:
    """A machine under test and its oracle, fed the same events."""

    mode: Mode
    table: CompiledTable = DEFAULT_TABLE
    machine: RequestMachine = field(init=False)
    oracle: Oracle = field(init=False)
    rejected: int = 0

    def __post_init__(self) -> None:
        self.machine = RequestMachine(self.mode, self.table)
        self.oracle = Oracle(self.mode)

    def send(self, ev: Event) -> None:
        """Fire ``ev`` and compare the actions with the oracle's expectations."""
        m, o = self.machine, self.oracle
        allowed = o.allows(ev)
        assert m.allowed(ev) == allowed, f"{ev} in {m.state.describe()}"
        if not allowed:
            state, steps = m.state, len(m.history)
            with pytest.raises(ProtocolViolation) as info:
                m.fire(ev)
            assert info.value.rule in str(info.value)
            assert m.state is state
            assert len(m.history) == steps
            self.rejected += 1
            return
        was_live = o.phase == "live"
        actions = m.fire(ev)
        expected_aborts = o.advance(ev)
        assert actions.count(ActionKind.CALL_ABORT) == expected_aborts, (ev, actions)
        forwards = sum(actions.count(a) for a in FORWARDS)
        assert forwards == (1 if was_live and ev.kind in FORWARDED_ITEMS else 0), (ev, actions)
        if was_live and ev.kind is EventKind.ERROR:
            assert ActionKind.FORWARD_ERROR in actions
        stops = was_live and ev.kind in (EventKind.TERMINAL, EventKind.ERROR, EventKind.DROP)
        assert (ActionKind.STOP_READING in actions) == stops, (ev, actions)
        assert (ActionKind.RELEASE_WATCH in actions) == (was_live and o.phase == "done"), (ev, actions)
        if ev.kind is EventKind.SETUP_FAILED:
            assert actions == (ActionKind.RETURN_SETUP_ERROR,)
        else:
            assert ActionKind.RETURN_SETUP_ERROR not in actions
        if ActionKind.CALL_ABORT in actions and ActionKind.FORWARD_DATA in actions:
            # The released abort is issued before the chunk that released it is passed on.
            assert actions.index(ActionKind.CALL_ABORT) < actions.index(ActionKind.FORWARD_DATA)

    def sent(self, *kinds: EventKind) -> int:
        """How many accepted events of these kinds this request has seen."""
        return sum(1 for step in self.machine.history if step.event.kind in kinds)

    def forbidden_now(self) -> list[Event]:
        return [ev for ev in ALL_EVENTS if not self.oracle.allows(ev)]

    # Checks run after every step.

    def check_model_invariants(self) -> None:
        state = self.machine.state
        for state_inv in STATE_INVARIANTS:
            assert state_inv.holds(state), f"{state_inv.rule} {state_inv.name}: {state.describe()}"
        if self.machine.history:
            step = self.machine.history[-1]
            for step_inv in STEP_INVARIANTS:
                where = f"{step.event} in {step.before.describe()}"
                assert step_inv.holds(step), f"{step_inv.rule} {step_inv.name}: {where}"

    def check_aborts(self) -> None:
        """Abort at most once, only after cancellation, never in decode before
        first-token, and at once outside decode."""
        o = self.oracle
        aborts = sum(step.actions.count(ActionKind.CALL_ABORT) for step in self.machine.history)
        assert aborts == o.aborts == self.machine.state.aborts
        assert aborts <= 1
        if not o.cancelled:
            assert aborts == 0
        if o.decode and not o.first_token:
            assert aborts == 0
        if not o.decode and o.cancelled and o.phase == "live":
            assert aborts == 1

    def check_forwarding(self) -> None:
        """Every chunk or error that arrived on the live stream was forwarded once."""
        forwarded = sum(step.actions.count(a) for step in self.machine.history for a in FORWARDS)
        assert forwarded == self.oracle.items
        assert self.machine.state.forwarded == (self.oracle.items > 0)

    def check_state(self) -> None:
        """The machine's state agrees with the oracle's few booleans."""
        state, o = self.machine.state, self.oracle
        assert _PHASE[state.control] == o.phase
        assert state.watching == (o.phase == "live")
        assert (state.cancel is not None) == o.cancelled
        assert state.first_token == o.first_token
        if o.phase == "live":
            assert (state.control is ControlState.CANCEL_PENDING) == o.deferred
            assert (state.control is ControlState.ABORTED) == (o.aborts == 1)
            assert (state.control is ControlState.STREAMING) == (not o.cancelled)

    def check_all(self) -> None:
        self.check_model_invariants()
        self.check_aborts()
        self.check_forwarding()
        self.check_state()


class RequestProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.request = Request(Mode.AGGREGATED)

    @initialize(mode=MODES)
    def start(self, mode: Mode) -> None:
        self.request = Request(mode)

    @property
    def oracle(self) -> Oracle:
        return self.request.oracle

    def send(self, ev: Event) -> None:
        self.request.send(ev)

    # One rule per event kind, each enabled when the protocol allows the event
    # (judged by the oracle, so a wrongly forbidden event is still noticed).

    @precondition(lambda self: self.oracle.phase == "live")
    @rule()
    def token_chunk(self) -> None:
        self.send(event(EventKind.TOKEN_CHUNK))

    @precondition(lambda self: self.oracle.phase == "live")
    @rule()
    def empty_chunk(self) -> None:
        self.send(event(EventKind.EMPTY_CHUNK))

    @precondition(lambda self: self.oracle.phase == "live")
    @rule(reason=st.sampled_from(list(FinishReason)), with_tokens=st.booleans())
    def terminal(self, reason: FinishReason, with_tokens: bool) -> None:
        self.send(event(EventKind.TERMINAL, reason, with_tokens))

    @precondition(lambda self: self.oracle.phase == "live")
    @rule()
    def error(self) -> None:
        self.send(event(EventKind.ERROR))

    @precondition(lambda self: self.oracle.phase == "live")
    @rule()
    def end(self) -> None:
        self.send(event(EventKind.END))

    # Always allowed; repeats past the second teach nothing, so they are capped
    # to keep the random runs moving towards the interesting states.

    @precondition(lambda self: self.request.sent(EventKind.STOP, EventKind.KILL) < 2)
    @rule()
    def stop(self) -> None:
        self.send(event(EventKind.STOP))

    @precondition(lambda self: self.request.sent(EventKind.STOP, EventKind.KILL) < 2)
    @rule()
    def kill(self) -> None:
        self.send(event(EventKind.KILL))

    @precondition(lambda self: self.request.sent(EventKind.FIRST_TOKEN_NOTICE) < 2)
    @rule()
    def first_token_notice(self) -> None:
        self.send(event(EventKind.FIRST_TOKEN_NOTICE))

    @precondition(lambda self: self.oracle.phase != "idle")
    @rule()
    def drop(self) -> None:
        self.send(event(EventKind.DROP))

    @precondition(lambda self: self.oracle.phase == "idle")
    @rule()
    def setup(self) -> None:
        self.send(event(EventKind.SETUP))

    @precondition(lambda self: self.oracle.phase == "idle")
    @rule()
    def setup_failed(self) -> None:
        self.send(event(EventKind.SETUP_FAILED))

    @precondition(lambda self: self.request.rejected < 3 and bool(self.request.forbidden_now()))
    @rule(data=st.data())
    def forbidden_event(self, data: st.DataObject) -> None:
        """Any event the protocol forbids here is rejected and changes nothing."""
        self.send(data.draw(st.sampled_from(self.request.forbidden_now())))

    @precondition(lambda self: self.oracle.phase == "done")
    @rule()
    def next_request(self) -> None:
        """A finished request teaches nothing more; the worker serves a new one
        in the same mode, so long runs keep exploring live states."""
        self.start(self.oracle.mode)

    # The model's own invariants, on the current state and the last step.

    @invariant()
    def model_invariants_hold(self) -> None:
        self.request.check_model_invariants()

    # The independent oracle.

    @invariant()
    def aborts_agree_with_oracle(self) -> None:
        self.request.check_aborts()

    @invariant()
    def every_live_item_forwarded_once(self) -> None:
        self.request.check_forwarding()

    @invariant()
    def state_agrees_with_oracle(self) -> None:
        self.request.check_state()


RequestProtocol.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestRequestProtocol = RequestProtocol.TestCase


@st.composite
def next_event(draw: st.DrawFn, oracle: Oracle) -> Event:
    """An allowed event: kind uniformly among the allowed kinds, then the
    terminal's reason and tokens (so the eight terminals do not crowd out the rest)."""
    kinds = sorted({ev.kind for ev in ALL_EVENTS if oracle.allows(ev)}, key=lambda k: k.value)
    kind = draw(st.sampled_from(kinds))
    if kind is EventKind.TERMINAL:
        return event(kind, draw(st.sampled_from(list(FinishReason))), draw(st.booleans()))
    return event(kind)


@settings(max_examples=300, deadline=None)
@given(mode=MODES, data=st.data())
def test_random_walks_agree_with_oracle(mode: Mode, data: st.DataObject) -> None:
    """Uniform random walks through allowed events (to Done, or 30 events)
    keep every model invariant and match the oracle step by step; every
    forbidden event is refused along the way."""
    request = Request(mode)
    for _ in range(30):
        ev = data.draw(next_event(request.oracle))
        request.send(ev)
        request.check_all()
        for other in ALL_EVENTS:
            assert request.machine.allowed(other) == request.oracle.allows(other), other
        if request.oracle.phase == "done":
            break
