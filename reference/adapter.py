"""The reference adapter: sets up the engine's stream, monitors the request's signals and
forwards the engine's items, as Dynamo's adapter does, with the model deciding every step.

Each request owns a :class:`RequestMachine` and the model's :class:`StreamReader`
over it.  Whatever happens (setup, an item, a raise, the end, a signal, a drop)
is one call of the model, and the adapter performs the actions it returns.  What
an item is, which row fires, which fault applies and which error a request ends
with are the model's answers, never worked out here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from types import AsyncGeneratorType
from typing import Any

from dynamo_backend_protocol.model import (
    DEFAULT_TABLE,
    ActionKind,
    CompiledTable,
    Event,
    EventKind,
    Mode,
    RequestMachine,
    Step,
    event,
)
from dynamo_backend_protocol.model.faults import error_of, leaving_event, setup_fault
from dynamo_backend_protocol.model.machine import FORWARD_ONLY
from dynamo_backend_protocol.model.reading import Actions, StreamReader
from dynamo_backend_protocol.reference.annotated import Annotated, ForwardedData
from dynamo_backend_protocol.reference.bounded import BestEffort
from dynamo_backend_protocol.reference.context import Context, HomeLoop, Signal, cancelled_by_consumer
from dynamo_backend_protocol.reference.engine import Reads, call_optional, stream_of
from dynamo_backend_protocol.reference.response import ResponseStream
from dynamo_backend_protocol.reference.traces.boundary import Boundary, ObservingSink
from dynamo_backend_protocol.reference.traces.observers import Observers

__all__ = ["EngineAdapter", "ResponseStream", "TraceSink"]

logger = logging.getLogger(__name__)

TraceSink = Callable[[str, Sequence[Step]], None]
"""Called once per request when it reaches Done, with the request id and its steps.
An :class:`ObservingSink` also takes the request's observations."""

_SETUP = event(EventKind.SETUP)
_DROP = event(EventKind.DROP)
_SIGNAL_EVENTS: dict[Signal, Event] = {
    "stop": event(EventKind.STOP),
    "kill": event(EventKind.KILL),
    "first_token": event(EventKind.FIRST_TOKEN_NOTICE),
}
_CANCELLATION = asyncio.CancelledError
_FORWARD_DATA, _FORWARD_ERROR = ActionKind.FORWARD_DATA, ActionKind.FORWARD_ERROR


class EngineAdapter:
    """Wraps an engine for the runtime.  ``await adapter.generate(request, context)``
    returns the response stream of :class:`Annotated` items."""

    def __init__(
        self,
        engine: Any,
        mode: Mode = Mode.AGGREGATED,
        *,
        validate: bool = True,
        trace_sink: TraceSink | None = None,
        table: CompiledTable = DEFAULT_TABLE,
        abort_timeout: float | None = 10.0,
        close_timeout: float | None = 5.0,
        keep_traces: bool = True,
    ) -> None:
        if trace_sink is not None and not keep_traces:
            raise ValueError("a trace_sink needs keep_traces=True: it is handed each request's trace")
        self.engine = engine
        self.mode = mode
        self.validate = validate
        self.trace_sink = trace_sink
        self.table = table
        self.abort_timeout = abort_timeout
        """An ``engine.abort`` still running after this many seconds is cancelled (None: wait forever)."""
        self.close_timeout = close_timeout
        """Closing the engine's stream (its ``finally``) may take this long before it is cancelled."""
        self.sink_failures = 0
        """Calls of ``trace_sink`` that raised; the stream went on as if it had not."""
        self.keep_traces = keep_traces
        """Each request keeps its model steps (``ResponseStream.trace``); off, it keeps none."""
        self.best_effort = BestEffort()
        """The aborts and engine-stream closes this adapter started."""
        self._boundary: Boundary | None = None
        if isinstance(trace_sink, ObservingSink):
            self._boundary = Observers(trace_sink, mode, validate, self._sink_failed)
        self._engine_calls: Any = engine if self._boundary is None else self._boundary.engine(engine)
        """The engine as this adapter calls it: the engine itself, or its observer."""

    async def generate(self, request: dict[str, Any], context: Context) -> ResponseStream:
        """Set up the engine's stream.  A setup failure is raised as a :class:`DynamoError`."""
        boundary = None if self._boundary is None else self._boundary.request(context)
        driver = _RequestDriver(self, context)
        try:
            produced = self._engine_calls.generate(request, context)
            if inspect.isawaitable(produced):
                produced = await produced
            stream = stream_of(produced)
        except BaseException as exc:
            response = setup_fault(exc)
            driver.end_now(response.event)
            raised = exc if response.propagates else error_of(exc)
            if boundary is not None:
                boundary.setup_failed(raised)
            if raised is exc:
                raise
            raise raised from exc
        driver.start(stream)
        return ResponseStream(driver, boundary)

    async def settle(self) -> None:
        """Wait until every abort and engine-close this adapter started has finished."""
        await self.best_effort.settle()

    @property
    def background_tasks(self) -> int:
        return len(self.best_effort.tasks)

    @property
    def abandoned_tasks(self) -> int:
        """Aborts and closes given up at their bound that have not finished yet (their
        engine swallowed the cancellation); :meth:`settle` does not wait for them."""
        return len(self.best_effort.abandoned)

    @property
    def abort_failures(self) -> int:
        """Aborts that raised or overran ``abort_timeout``."""
        return self.best_effort.failures["abort"]

    @property
    def close_failures(self) -> int:
        """Engine streams whose closing raised or overran ``close_timeout``."""
        return self.best_effort.failures["close"]

    def _deliver_trace(self, request: str, steps: Sequence[Step]) -> None:
        sink = self.trace_sink
        assert sink is not None
        try:
            sink(request, steps)
        except Exception:
            # The trace is a by-product: a full disk must not cost the client its terminal.
            self._sink_failed(request)

    def _sink_failed(self, request: str) -> None:
        self.sink_failures += 1
        if self.sink_failures == 1:
            logger.warning("trace_sink raised for request %s; later failures are only counted", request,
                           exc_info=True)

    async def _abort(self, context: Context) -> None:
        await self.best_effort.attempt("abort", call_optional(self._engine_calls, "abort", context),
                                       self.abort_timeout, f"engine.abort for request {context.id()}")


class _RequestDriver:
    """One request: feeds what happens to the model and performs the actions it returns."""

    __slots__ = ("_adapter", "_heard", "_home", "_listening", "_traced", "context", "machine", "reader", "stream")

    def __init__(self, adapter: EngineAdapter, context: Context) -> None:
        self._adapter = adapter
        self.context = context
        self.machine = RequestMachine(adapter.mode, adapter.table, keep_history=adapter.keep_traces)
        self.reader = StreamReader(self.machine, validate=adapter.validate, cancellation=_CANCELLATION,
                                   hear_signals=self.catch_up_with_context)
        self.stream: AsyncIterator[Any] | None = None
        self._home = HomeLoop()
        self._listening = False
        self._traced = False
        self._heard: set[Signal] = set()

    # Setup and the monitor: events other than the engine's items.

    def require_home_loop(self) -> None:
        self._home.require_running()

    def start(self, stream: AsyncIterator[Any]) -> None:
        self.stream = stream
        # Listen first, then catch up: a signal from another thread is then either
        # already in the context or reaches the listener; none falls between the two.
        self.context.add_listener(self._on_signal)
        self._listening = True
        self.catch_up_with_context()
        self.perform(self.fire(_SETUP))

    def fire(self, ev: Event) -> Actions:
        return self.stepped(self.machine.fire(ev))

    def stepped(self, actions: Actions) -> Actions:
        """Hand the trace over once the request is Done, before its last actions are performed."""
        if not self._traced and self.machine.over:
            self._traced = True
            if self._adapter.trace_sink is not None:
                self._adapter._deliver_trace(self.context.id(), self.machine.history)
        return actions

    def end_now(self, ev: Event) -> bool:
        """End the request with ``ev`` after hearing every signal given so far; returns
        whether stop-reading is owed.  A request already over stays as it is."""
        if self.machine.over:
            return False
        self.catch_up_with_context()
        return self.perform(self.fire(ev))

    def catch_up_with_context(self) -> None:
        """Hear the signals the context already shows: one from another thread reaches the
        loop a turn later, and the engine may act on ``is_stopped()`` before that."""
        for signal in self.context.signals():
            self._hear(signal)

    def _hear(self, signal: Signal) -> None:
        if signal in self._heard:
            return
        self._heard.add(signal)
        if not self.machine.over:
            self.perform(self.fire(_SIGNAL_EVENTS[signal]))

    def _on_signal(self, signal: Signal) -> None:
        """Called by the context on the signaller's thread, which must never see the adapter's errors."""
        try:
            self._home.call(lambda: self._hear(signal))
        except Exception:
            logger.exception("handling signal %r of request %s failed", signal, self.context.id())

    # Performing the actions that need no consumer.

    def perform(self, actions: Actions) -> bool:
        """Perform the actions other than forwarding; returns whether stop-reading is owed."""
        owes_close = False
        for action in actions:
            if action is ActionKind.CALL_ABORT:
                self._home.start(lambda: self._adapter._abort(self.context), self._adapter.best_effort.track)
            elif action is ActionKind.RELEASE_WATCH:
                self._release_watch()
            elif action is ActionKind.STOP_READING:
                owes_close = True
        return owes_close

    def _release_watch(self) -> None:
        if self._listening:
            self._listening = False
            self.context.remove_listener(self._on_signal)

    async def close_engine_stream(self) -> None:
        stream = self.stream
        # A reader still inside the engine's generator closes it when it comes out.
        if stream is None or getattr(stream, "ag_running", False):
            return
        self.stream = None
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            # It may fail: e.g. a generator that yields while being closed ("ignored GeneratorExit").
            await self._adapter.best_effort.attempt("close", aclose(), self._adapter.close_timeout,
                                                    f"closing the engine stream of request {self.context.id()}")

    def abandon(self) -> None:
        """The consumer dropped the stream without closing it: fire drop now, close later."""
        if self.end_now(_DROP) and self.stream is not None:
            self._home.start(self.close_engine_stream, self._adapter.best_effort.track)

    async def dropped(self) -> None:
        await self.ended_by(_DROP)

    async def ended_by(self, ev: Event) -> None:
        """End the request with ``ev`` (a drop, an interrupt) and close the engine's stream if owed."""
        if self.end_now(ev):
            await self.close_engine_stream()

    # Forwarding: the engine's items, one model call each.

    async def run(self) -> AsyncIterator[Annotated]:
        stream = self.stream
        assert stream is not None
        reader, read, forwarded = self.reader, self.reader.read, ForwardedData
        reads = stream if type(stream) is AsyncGeneratorType else Reads(stream)
        # Set when an exception on its way out is not the engine's: the model's own, or one
        # the consumer threw in at a yield.
        ours = exhausted = False
        try:
            while True:
                item: Any = None
                try:
                    async for item in reads:
                        try:
                            actions = read(item)
                            if actions is not FORWARD_ONLY:
                                break
                            out = forwarded()
                            out.data = item
                            yield out
                        except BaseException:
                            ours = True
                            raise
                    else:
                        ours = exhausted = True  # what is raised from here on is not the engine's
                        actions = reader.ended()
                except BaseException as exc:
                    if ours:
                        raise
                    answer = reader.raised(exc, cancelled_by_consumer())
                    if answer is None:
                        raise
                    item, actions = None, answer
                self.stepped(actions)
                for index, action in enumerate(actions):
                    if action is _FORWARD_DATA or action is _FORWARD_ERROR:
                        out = Annotated(item) if action is _FORWARD_DATA else Annotated(error=reader.error)
                        try:
                            yield out
                        except BaseException:
                            # The consumer left mid-step: what the step still owes is owed anyway.
                            if self.perform(actions[index + 1 :]):
                                await self.close_engine_stream()
                            raise
                    elif self.perform((action,)):
                        await self.close_engine_stream()
                if exhausted or self.machine.over:
                    self.stream = None  # hold nothing of the engine's generator
                    return
        except BaseException as exc:
            await self.ended_by(leaving_event(exc, _CANCELLATION))
            raise
