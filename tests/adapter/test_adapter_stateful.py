"""The real asyncio adapter, driven step by step, against the pure model as oracle.

A Hypothesis state machine plays both sides of one request: the engine (a
scripted engine whose stream takes its next item from a queue the test feeds,
and which may signal first-token on the side channel) and the client (read the
next item, stop, kill, drop the stream).  Every act is also fed, as the event
the protocol says it is, to a separate :class:`RequestMachine` (the oracle).
After every step the adapter must agree with the oracle on what was forwarded
(data and errors, in order), on how many times engine.abort ran, and on the
request's full protocol state; its own trace must satisfy every invariant.

The client's read is what pulls an item from the engine, so the engine rule
only fires while a read is pending: the engine produces the item, the pending
read returns it, and the oracle sees the engine event at that moment.  A stop
or a notice that comes between two items is a rule that runs while no item is
on its way.  One event loop serves a whole run (background work such as a
deferred abort must survive between steps); each step runs the loop until
nothing is left to do, then waits for the adapter's tasks with ``settle()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapter_helpers import REQUEST
from dynamo_backend_protocol.model import (
    ActionKind,
    BackendError,
    ControlState,
    DynamoError,
    Event,
    EventKind,
    FinishReason,
    Mode,
    RequestMachine,
    RequestState,
    Step,
    event,
)
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.reference import (
    Annotated,
    Context,
    EngineAdapter,
    ResponseStream,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

PUMP_ROUNDS = 6
"""Loop iterations per step; a read that can complete does so in two or three."""


# --------------------------------------------------------------------------- the scripted engine


@dataclass(frozen=True)
class EngineItem:
    """One thing the scripted engine's stream does next, and the event it is."""

    ev: Event
    payload: object = None
    """The chunk or typed error yielded; with ``raises``, the error raised."""
    raises: bool = False
    malformed: bool = False


def token_item(token_id: int) -> EngineItem:
    return EngineItem(event(EventKind.TOKEN_CHUNK), {"token_ids": [token_id], "index": 0})


def terminal_item(reason: FinishReason, with_tokens: bool, token_id: int) -> EngineItem:
    chunk = {
        "token_ids": [token_id] if with_tokens else [],
        "index": 0,
        "finish_reason": reason.value,
        # Encode mode requires the hand-off object on non-cancelled terminals.
        "encoder_result": {"handle": token_id},
    }
    return EngineItem(event(EventKind.TERMINAL, reason, with_tokens), chunk)


def error_item(kind: BackendError, raised: bool) -> EngineItem:
    """A typed error, raised (Python style) or yielded as an item (the Rust ``Err``)."""
    return EngineItem(event(EventKind.ERROR), DynamoError(kind, f"engine failed with {kind.value}"), raises=raised)


TOKENLESS_ITEM = EngineItem(event(EventKind.EMPTY_CHUNK), {"token_ids": [], "index": 0})
MALFORMED_ITEM = EngineItem(event(EventKind.ERROR), {"token_ids": [7, -1], "index": 0}, malformed=True)
"""A chunk carrying tokens that validation rejects: the protocol sees an error, not a token."""
END_ITEM = EngineItem(event(EventKind.END))
"""The engine's stream ends without a terminal."""


class QueueEngine:
    """A duck-typed engine: ``generate`` is an ``async def`` that performs the drawn
    setup acts (signals, or a setup failure) and returns a stream fed by a queue."""

    def __init__(self, setup_acts: list[str], setup_error: DynamoError | None) -> None:
        self.queue: asyncio.Queue[EngineItem] = asyncio.Queue()
        self.setup_acts = setup_acts
        self.setup_error = setup_error
        self.aborts = 0
        self.started = 0
        self.finalized = 0

    async def start(self, worker_id: int) -> None:
        return None

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[object]:
        for act in self.setup_acts:
            signal(context, act)
        await asyncio.sleep(0)
        if self.setup_error is not None:
            raise self.setup_error
        return self._stream()

    async def _stream(self) -> AsyncIterator[object]:
        self.started += 1
        try:
            while True:
                item = await self.queue.get()
                if item.ev.kind is EventKind.END:
                    return
                if item.raises:
                    assert isinstance(item.payload, BaseException)
                    raise item.payload
                yield item.payload
        finally:
            self.finalized += 1

    async def abort(self, context: Context) -> None:
        self.aborts += 1

    async def cleanup(self) -> None:
        return None


SIGNAL_EVENTS = {
    "stop": event(EventKind.STOP),
    "kill": event(EventKind.KILL),
    "notify": event(EventKind.FIRST_TOKEN_NOTICE),
}


def signal(context: Context, act: str) -> None:
    if act == "stop":
        context.stop_generating()
    elif act == "kill":
        context.kill()
    else:
        context.notify_first_token()


async def signal_in_loop(context: Context, act: str) -> None:
    """Signals come from code running on the loop (the runtime, the engine)."""
    signal(context, act)


# --------------------------------------------------------------------------- reading

_ENDED = object()
"""What a read returns when the response stream has ended."""
_MALFORMED = object()
"""Stands for the error item that reports a malformed chunk (its wording is the adapter's)."""


async def read_one(stream: ResponseStream) -> object:
    try:
        item: Annotated = await anext(stream)
    except StopAsyncIteration:
        return _ENDED
    return item


def is_validation_error(result: object) -> bool:
    """An Unknown error item whose text names the malformed field of the scripted chunk."""
    if not isinstance(result, Annotated) or result.error is None:
        return False
    return result.error.error_type() is BackendError.UNKNOWN and "token_ids" in result.error.message


def expected_read(item: EngineItem, actions: tuple[ActionKind, ...]) -> object:
    """What the read that consumed ``item`` must return, given the model's actions for it."""
    forwards = [a for a in actions if a in (ActionKind.FORWARD_DATA, ActionKind.FORWARD_ERROR)]
    assert len(forwards) <= 1, f"the model forwards {len(forwards)} items for one engine item"
    if not forwards:
        return _ENDED
    if forwards[0] is ActionKind.FORWARD_DATA:
        assert isinstance(item.payload, dict)
        return Annotated(data=item.payload)
    if item.malformed:
        return _MALFORMED
    assert isinstance(item.payload, DynamoError)
    return Annotated(error=item.payload)


# --------------------------------------------------------------------------- the state machine


class AdapterAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.context = Context()
        self.engine: QueueEngine | None = None
        self.adapter: EngineAdapter | None = None
        self.oracle: RequestMachine | None = None
        self.stream: ResponseStream | None = None
        self.machine: RequestMachine | None = None
        """The adapter's own machine for this request (kept after the stream is forgotten)."""
        self.sunk: list[Step] | None = None
        self.received: list[object] = []
        self.expected: list[object] = []
        self.read_task: asyncio.Task[object] | None = None
        self.read_expects_engine_item = False
        self.produced: EngineItem | None = None
        self.dropped = False

    # ------------------------------------------------------------------ plumbing

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _pump(self) -> None:
        for _ in range(PUMP_ROUNDS):
            await asyncio.sleep(0)
        if self.adapter is not None:
            await self.adapter.settle()
        for _ in range(PUMP_ROUNDS):
            await asyncio.sleep(0)

    def pump(self) -> None:
        self.run(self._pump())
        self._collect_read()

    def fire(self, ev: Event) -> tuple[ActionKind, ...]:
        assert self.oracle is not None
        return self.oracle.fire(ev)

    @property
    def oracle_state(self) -> RequestState:
        assert self.oracle is not None
        return self.oracle.state

    @property
    def stream_open(self) -> bool:
        return self.stream is not None and not self.dropped

    @property
    def live(self) -> bool:
        return self.oracle_state.control is not ControlState.DONE

    @property
    def engine_may_produce(self) -> bool:
        """The request is live and its stream open, and no engine item is on its way."""
        return self.stream_open and self.produced is None and self.live

    def _collect_read(self) -> None:
        task = self.read_task
        if task is None or not task.done():
            return
        self.read_task = None
        assert not task.cancelled(), "a read was cancelled although the stream was not dropped"
        result = task.result()
        if self.read_expects_engine_item:
            item = self.produced
            assert item is not None, "a read completed although the engine produced nothing"
            self.produced = None
            self.expected.append(expected_read(item, self.fire(item.ev)))
        else:
            self.expected.append(_ENDED)
        self.received.append(_MALFORMED if is_validation_error(result) else result)

    def _sink(self, request: str, steps: Any) -> None:
        assert self.sunk is None, "trace sink called twice for one request"
        self.sunk = list(steps)

    # ------------------------------------------------------------------ setup

    @initialize(
        mode=st.sampled_from(Mode),
        setup_acts=st.one_of(st.just([]), st.lists(st.sampled_from(sorted(SIGNAL_EVENTS)), min_size=1, max_size=3)),
        setup_fails=st.sampled_from([False] * 7 + [True]),
    )
    def set_up(self, mode: Mode, setup_acts: list[str], setup_fails: bool) -> None:
        """The engine's ``generate`` runs; signals may arrive while it sets up; it may fail."""
        setup_error = DynamoError(BackendError.CANNOT_CONNECT, "setup failed") if setup_fails else None
        self.engine = QueueEngine(setup_acts, setup_error)
        self.adapter = EngineAdapter(self.engine, mode, trace_sink=self._sink)
        self.oracle = RequestMachine(mode)
        for act in setup_acts:
            self.fire(SIGNAL_EVENTS[act])
        if setup_fails:
            self.fire(event(EventKind.SETUP_FAILED))
            try:
                self.run(self.adapter.generate(REQUEST, self.context))
            except DynamoError as err:
                assert err == setup_error
            else:
                raise AssertionError("a failed setup produced a stream")
        else:
            self.fire(event(EventKind.SETUP))
            self.stream = self.run(self.adapter.generate(REQUEST, self.context))
            self.machine = self.stream.machine
        self.pump()

    # ------------------------------------------------------------------ reading and the engine

    def _start_read(self) -> None:
        assert self.stream is not None
        self.read_expects_engine_item = self.oracle_state.control is not ControlState.DONE
        self.read_task = self.loop.create_task(read_one(self.stream))

    def _produce(self, item: EngineItem) -> None:
        """The engine's stream answers the client's read (the client asks first if it
        was not already waiting)."""
        if self.read_task is None:
            self._start_read()
        assert self.engine is not None
        self.engine.queue.put_nowait(item)
        self.produced = item
        self.pump()
        assert self.produced is None, "the pending read did not take the item the engine produced"

    @precondition(lambda self: self.engine_may_produce)
    @rule(token_id=st.integers(0, 2**31))
    def engine_yields_token_chunk(self, token_id: int) -> None:
        self._produce(token_item(token_id))

    @precondition(lambda self: self.engine_may_produce)
    @rule()
    def engine_yields_tokenless_chunk(self) -> None:
        self._produce(TOKENLESS_ITEM)

    @precondition(lambda self: self.engine_may_produce)
    @rule(reason=st.sampled_from(FinishReason), with_tokens=st.booleans(), token_id=st.integers(0, 2**31))
    def engine_yields_terminal(self, reason: FinishReason, with_tokens: bool, token_id: int) -> None:
        self._produce(terminal_item(reason, with_tokens, token_id))

    @precondition(lambda self: self.engine_may_produce)
    @rule(kind=st.sampled_from(BackendError), raised=st.booleans())
    def engine_fails_with_typed_error(self, kind: BackendError, raised: bool) -> None:
        """Raised (Python style) or yielded as an item (the Rust ``Err``)."""
        self._produce(error_item(kind, raised))

    @precondition(lambda self: self.engine_may_produce)
    @rule()
    def engine_yields_malformed_chunk(self) -> None:
        self._produce(MALFORMED_ITEM)

    @precondition(lambda self: self.engine_may_produce)
    @rule()
    def engine_ends_without_terminal(self) -> None:
        self._produce(END_ITEM)

    @precondition(lambda self: self.stream_open and self.read_task is None)
    @rule()
    def client_reads_and_waits(self) -> None:
        """The client asks for the next item; on a live request it waits for the engine,
        so stops, kills, notices and drops can happen while it waits."""
        self._start_read()
        self.pump()

    @precondition(lambda self: self.oracle is not None and not self.context.first_token_notified())
    @rule()
    def engine_notifies_first_token(self) -> None:
        """The engine's side channel (``context.notify_first_token()``), at any time
        (only the first call counts: the context ignores repeats)."""
        self.run(signal_in_loop(self.context, "notify"))
        self.fire(SIGNAL_EVENTS["notify"])
        self.pump()

    # ------------------------------------------------------------------ the client

    @precondition(lambda self: self.oracle is not None)
    @rule(act=st.sampled_from(["stop", "kill"]))
    def client_cancels(self, act: str) -> None:
        """``context.stop_generating()`` or ``context.kill()``, at any time."""
        self.run(signal_in_loop(self.context, act))
        self.fire(SIGNAL_EVENTS[act])
        self.pump()

    @precondition(lambda self: self.stream_open)
    @rule(forget=st.booleans())
    def client_drops_stream(self, forget: bool) -> None:
        """The consumer goes away: its pending read (if any) is cancelled, then it
        closes the stream with ``aclose()`` or just forgets it."""
        self._drop(forget)

    def _drop(self, forget: bool) -> None:
        assert self.stream is not None
        self.dropped = True
        task, self.read_task = self.read_task, None
        if task is not None:
            task.cancel()
            self.run(asyncio.wait([task]))
            assert task.cancelled(), "a read pending at drop time must end cancelled"
        if forget:
            self.stream = None  # the last reference: CPython finalizes it here
        else:
            self.run(self.stream.aclose())
        self.produced = None
        self.fire(event(EventKind.DROP))
        self.pump()

    # ------------------------------------------------------------------ agreement with the model

    def _adapter_steps(self) -> list[Step]:
        if self.machine is not None:
            return self.machine.history
        return list(self.sunk or [])

    @invariant()
    def forwarded_items_match_the_model(self) -> None:
        assert self.received == self.expected

    @invariant()
    def abort_count_matches_the_model(self) -> None:
        assert self.engine is not None
        assert self.engine.aborts == self.oracle_state.aborts

    @invariant()
    def protocol_state_matches_the_model(self) -> None:
        if self.machine is not None:
            assert self.machine.state == self.oracle_state
        else:
            assert self.sunk, "a failed setup must still be traced"
            assert self.sunk[-1].after == self.oracle_state

    @invariant()
    def adapter_trace_is_the_model_history(self) -> None:
        """Every event that changed something happened in the same order, with the same
        actions, in the adapter as in the oracle.  (Repeated or late signals are
        ignored steps; the context does not even pass repeats on, so those may differ.)"""
        assert self.oracle is not None
        adapter = [(s.event.name, s.after, s.actions) for s in self._adapter_steps() if not s.ignored]
        model = [(s.event.name, s.after, s.actions) for s in self.oracle.history if not s.ignored]
        assert adapter == model

    @invariant()
    def adapter_trace_satisfies_the_invariants(self) -> None:
        for step in self._adapter_steps():
            broken = [inv.name for inv in STEP_INVARIANTS if not inv.holds(step)]
            broken += [inv.name for inv in STATE_INVARIANTS if not inv.holds(step.after)]
            assert not broken, f"{step.event.name} -> {step.after.describe()} breaks {broken}"

    @invariant()
    def trace_sink_called_once_the_request_is_done(self) -> None:
        done = self.oracle_state.control is ControlState.DONE
        assert (self.sunk is not None) == done

    def teardown(self) -> None:
        try:
            if self.stream_open:
                self._drop(forget=False)
                self.abort_count_matches_the_model()
                self.protocol_state_matches_the_model()
            if self.engine is not None:
                assert self.engine.finalized == self.engine.started, "the engine generator's finally did not run"
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


AdapterAgainstModel.TestCase.settings = settings(
    # About two seconds.  Against the adapter run with one table row faulted, 100 runs missed
    # about one fault in five (mostly decode rows), 200 about one in eight.
    max_examples=200,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAdapterAgainstModel = AdapterAgainstModel.TestCase
