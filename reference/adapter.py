"""The reference adapter: bridges an engine's stream to the runtime, driven by the model.

For each request the adapter owns one :class:`RequestMachine`.  It turns what
happens (the engine set up its stream, yielded an item, raised; the client
stopped, killed or went away; the engine signalled first-token) into model
events, and performs exactly the actions the machine returns: forward an
item, forward an error, return the setup error, call ``engine.abort``, stop
reading the engine, release the cancellation watch.  It decides nothing itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from types import AsyncGeneratorType
from typing import Any

from dynamo_backend_protocol.model import (
    DEFAULT_TABLE,
    ActionKind,
    BackendError,
    CompiledTable,
    ControlState,
    DynamoError,
    Event,
    EventKind,
    Mode,
    RequestMachine,
    Step,
    event,
)
from dynamo_backend_protocol.model.chunks import ERROR, TOKEN_CHUNK, classify_item, unreadable_item
from dynamo_backend_protocol.model.faults import Fault, fault_event
from dynamo_backend_protocol.model.machine import FORWARD_ONLY
from dynamo_backend_protocol.reference.annotated import Annotated, ForwardedData, as_dynamo_error
from dynamo_backend_protocol.reference.bounded import within
from dynamo_backend_protocol.reference.chunks import Chunk
from dynamo_backend_protocol.reference.context import Context, Signal
from dynamo_backend_protocol.reference.engine import call_optional

logger = logging.getLogger(__name__)

TraceSink = Callable[[str, Sequence[Step]], None]
"""Called once per request when it reaches Done, with the request id and its steps."""

_SETUP = event(EventKind.SETUP)
_END = event(EventKind.END)
_DROP = event(EventKind.DROP)
_SETUP_RAISED = fault_event(Fault.SETUP_RAISED)
_SETUP_INTERRUPTED = fault_event(Fault.SETUP_INTERRUPTED)
_STREAM_RAISED = fault_event(Fault.STREAM_RAISED)
_ITEM_UNREADABLE = fault_event(Fault.ITEM_UNREADABLE)
_STREAM_INTERRUPTED = fault_event(Fault.STREAM_INTERRUPTED)
_SIGNAL_EVENTS: dict[Signal, Event] = {
    "stop": event(EventKind.STOP),
    "kill": event(EventKind.KILL),
    "first_token": event(EventKind.FIRST_TOKEN_NOTICE),
}
_FORWARD_DATA = ActionKind.FORWARD_DATA
_FORWARD_ERROR = ActionKind.FORWARD_ERROR
_CALL_ABORT = ActionKind.CALL_ABORT
_STOP_READING = ActionKind.STOP_READING
_RELEASE_WATCH = ActionKind.RELEASE_WATCH
_DONE = ControlState.DONE
_FIRST_CHOICE = 0
"""An index of 0, however it was made, is CPython's one cached small int, so one identity
check settles the common case; any other int takes the type and sign test."""


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
        self.abort_failures = 0
        """Aborts that raised or overran ``abort_timeout``."""
        self.close_failures = 0
        """Engine streams whose closing raised or overran ``close_timeout``."""
        self.sink_failures = 0
        """Calls of ``trace_sink`` that raised; the stream went on as if it had not."""
        self.keep_traces = keep_traces
        """Each request keeps its model steps (``ResponseStream.trace``); off, it keeps none."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Task[None]] = set()
        self._engine_calls: Any = engine
        """The engine as this adapter calls it: the engine itself, or its observer (observation traces)."""
        opener = getattr(trace_sink, "open_observations", None)
        if opener is not None:
            # Imported here: the observers wrap this module's ResponseStream.
            from dynamo_backend_protocol.reference.traces.observers import Observers

            observers = Observers(self, opener)
            self._engine_calls = observers.engine
            # Shadows the method on this instance only: an adapter without observers pays nothing.
            self.generate = observers.generate(self.generate)  # type: ignore[method-assign]

    async def generate(self, request: dict[str, Any], context: Context) -> ResponseStream:
        """Set up the engine's stream.  A setup failure is raised as a :class:`DynamoError`."""
        driver = _RequestDriver(self, context)
        try:
            produced = self._engine_calls.generate(request, context)
            if inspect.isawaitable(produced):
                produced = await produced
            stream = _as_async_iterator(produced)
        except Exception as exc:
            error = as_dynamo_error(exc)
            driver.end_now(_SETUP_RAISED)
            raise error from exc
        except BaseException:
            # The caller gave up while the engine was setting up, or an interrupt:
            # no stream will exist, so the request ends as a failed setup and stays traced.
            driver.end_now(_SETUP_INTERRUPTED)
            raise
        driver.start(stream)
        return ResponseStream(driver)

    async def settle(self) -> None:
        """Wait until every abort and engine-close this adapter started has finished."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)

    @property
    def background_tasks(self) -> int:
        return len(self._tasks)

    @property
    def abandoned_tasks(self) -> int:
        """Aborts and closes given up at their bound that have not finished yet (their
        engine swallowed the cancellation); :meth:`settle` does not wait for them."""
        return len(self._abandoned)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _abandon(self, task: asyncio.Task[None]) -> None:
        self._abandoned.add(task)
        task.add_done_callback(_forget_abandoned(self._abandoned))

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
        try:
            await within(call_optional(self._engine_calls, "abort", context), self.abort_timeout, self._abandon)
        except TimeoutError:
            self.abort_failures += 1
            logger.warning("engine.abort for request %s overran %ss; cancelled", context.id(), self.abort_timeout)
        except Exception:
            # The abort is best effort; a failing abort must not break the stream.
            self.abort_failures += 1
            logger.warning("engine.abort raised for request %s", context.id(), exc_info=True)


def _forget_abandoned(abandoned: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def forget(task: asyncio.Task[None]) -> None:
        abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it: it was counted when abandoned

    return forget


def _as_async_iterator(produced: object) -> AsyncIterator[Any]:
    aiter_method = getattr(produced, "__aiter__", None)
    if aiter_method is None:
        raise TypeError(f"engine.generate must produce an async iterator, got {type(produced).__name__}")
    iterator: AsyncIterator[Any] = aiter_method()
    if not callable(getattr(iterator, "__anext__", None)):
        raise TypeError(
            f"engine.generate produced a {type(produced).__name__} whose __aiter__ returned "
            f"{type(iterator).__name__}, which is not an async iterator (no __anext__)"
        )
    return iterator


class _RequestDriver:
    """Feeds one request's events to its machine and performs the returned actions."""

    __slots__ = (
        "_adapter",
        "_heard",
        "_listening",
        "_loop",
        "_thread",
        "context",
        "machine",
        "stream",
    )

    def __init__(self, adapter: EngineAdapter, context: Context) -> None:
        self._adapter = adapter
        self.context = context
        self.machine = RequestMachine(adapter.mode, adapter.table, keep_history=adapter.keep_traces)
        self.stream: AsyncIterator[Any] | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._listening = False
        self._heard: set[Signal] = set()

    # Events.

    def fire(self, ev: Event) -> tuple[ActionKind, ...]:
        actions = self.machine.fire(ev)
        if self.machine.state.control is _DONE and self._adapter.trace_sink is not None:
            self._adapter._deliver_trace(self.context.id(), self.machine.history)
        return actions

    def end_now(self, ev: Event) -> bool:
        """End the request with ``ev`` after hearing every signal given so far; returns
        whether stop-reading is owed.  A request already over stays as it is."""
        if self.machine.state.control is _DONE:
            return False
        self.catch_up_with_context()
        return self.perform(self.fire(ev))

    def catch_up_with_context(self) -> None:
        """Fire the signals the context already shows but this request has not heard yet.

        Signals from other threads reach the loop a turn later; an engine may
        act on ``is_stopped()`` before that.  Catching up before setup and
        before the stream ends keeps the model's view no later than the engine's.
        """
        for signal in self.context.signals():
            self._hear(signal)

    def _hear(self, signal: Signal) -> None:
        if signal in self._heard:
            return
        self._heard.add(signal)
        if self.machine.state.control is not _DONE:
            self.perform(self.fire(_SIGNAL_EVENTS[signal]))

    def start(self, stream: AsyncIterator[Any]) -> None:
        self.stream = stream
        # Listen first, then catch up: a signal from another thread is then either
        # already in the context or reaches the listener; none falls between the two.
        self.context.add_listener(self._on_signal)
        self._listening = True
        self.catch_up_with_context()
        self.perform(self.fire(_SETUP))
        if not self.machine.state.watching:
            self._release_watch()

    def _on_signal(self, signal: Signal) -> None:
        """Called by the context on the signaller's thread, which must never see the adapter's errors."""
        try:
            if threading.get_ident() != self._thread:
                if not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._hear, signal)
            else:
                self._hear(signal)
        except RuntimeError:
            if not self._loop.is_closed():
                raise
            # The loop closed between the check and the call: nothing is left to hear it.
        except Exception:
            logger.exception("handling signal %r of request %s failed", signal, self.context.id())

    # Actions that need no await; stop-reading is awaited by the caller when it can.

    def perform(self, actions: tuple[ActionKind, ...]) -> bool:
        """Perform the non-forwarding actions; returns whether stop-reading is owed."""
        owes_close = False
        for action in actions:
            if action is _CALL_ABORT:
                self._start_task(lambda: self._adapter._abort(self.context))
            elif action is _RELEASE_WATCH:
                self._release_watch()
            elif action is _STOP_READING:
                owes_close = True
        return owes_close

    def _start_task(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``work`` on the request's loop, from its thread or any other (a
        finalizer or a signal may run elsewhere, or while the loop is idle)."""
        loop = self._loop
        if loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            self._adapter._track(loop.create_task(work()))
            return
        try:
            loop.call_soon_threadsafe(lambda: self._adapter._track(loop.create_task(work())))
        except RuntimeError:
            if not loop.is_closed():
                raise

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
        if aclose is None:
            return
        try:
            await within(aclose(), self._adapter.close_timeout, self._adapter._abandon)
        except TimeoutError:
            self._adapter.close_failures += 1
            logger.warning(
                "closing the engine stream of request %s overran %ss; cancelled",
                self.context.id(),
                self._adapter.close_timeout,
            )
        except Exception:
            # e.g. a generator that yields while being closed ("ignored GeneratorExit").
            self._adapter.close_failures += 1
            logger.warning("closing the engine stream of request %s raised", self.context.id(), exc_info=True)

    def abandon(self) -> None:
        """The consumer dropped the stream without closing it: fire drop now, close later."""
        if self.end_now(_DROP) and self.stream is not None:
            self._start_task(self.close_engine_stream)

    async def ended_by(self, ev: Event) -> None:
        """End the request with ``ev`` (a drop, an interrupt) and close the engine's stream if owed."""
        if self.end_now(ev):
            await self.close_engine_stream()

    # The stream.

    async def run(self) -> AsyncIterator[Annotated]:
        stream = self.stream
        assert stream is not None
        machine = self.machine
        record = machine.keep_step
        keeping = self._adapter.keep_traces
        history = machine.history
        mode = machine.mode
        validate = self._adapter.validate
        reads = stream if type(stream) is AsyncGeneratorType else _Reads(stream)
        # Items read so far, counted in a float: CPython reuses freed floats, while
        # every int above 256 is a fresh allocation.  A float counts exactly to 2**53.
        position = 0.0
        # What the per-chunk check reads, bound as locals: a local is read in one
        # step, a global or builtin needs a lookup, and every chunk reads several of these.
        type_of, plain_dict, kit_chunk, plain_list, plain_int, length = type, dict, Chunk, list, int, len
        first_choice, forwarded = _FIRST_CHOICE, ForwardedData
        unpacking = True
        # The current state's step for a token, once the machine has shown it only
        # forwards and stays put; token_step is only read while token_state is current.
        token_state: object = None
        token_step: Any = None
        # Set when an exception on its way out was raised in this generator's own
        # body (a consumer's throw at a yield), not by the engine's read.
        raised_here = False
        try:
            while True:
                item: Any = None
                error: DynamoError | None = None
                try:
                    async for item in reads:
                        try:
                            position += 1.0
                            # The common chunk shape (a plain dict or the kit's Chunk, which
                            # overrides no lookup: one valid token, no terminal, no usage)
                            # is checked inline; any other item goes to classify_item, which
                            # gives this shape the same answer.  A chunk of token_ids alone,
                            # or of token_ids and an index of 0, has no other key to look
                            # for.  A token in the state whose token step is known is then
                            # one identity check and its record.  A throw at the token's
                            # yield is the consumer's, never an unreadable item.
                            try:
                                token_id: Any = None
                                if type_of(item) is plain_dict or type_of(item) is kit_chunk:
                                    # Unpacking takes the one token in a single step.  On these
                                    # exact types a KeyError means no token_ids and a ValueError
                                    # a list of another size; after either, this stream checks
                                    # the size first, which raises nothing.
                                    try:
                                        if type_of(token_ids := item["token_ids"]) is plain_list:
                                            if unpacking:
                                                [token_id] = token_ids
                                            elif length(token_ids) == 1:
                                                token_id = token_ids[0]
                                    except (KeyError, ValueError):
                                        unpacking = False
                                if (
                                    type_of(token_id) is plain_int
                                    and token_id >= 0
                                    and (
                                        (keys := length(item)) == 1
                                        or (keys == 2 and item.get("index") is first_choice)
                                        or (
                                            ("finish_reason" not in item or item["finish_reason"] is None)
                                            and "completion_usage" not in item
                                            and (
                                                item.get("index", first_choice) is first_choice
                                                or (type_of(choice := item["index"]) is plain_int and choice >= 0)
                                            )
                                        )
                                    )
                                ):
                                    if machine.state is token_state:
                                        if keeping:
                                            history.append(token_step)
                                        out = forwarded()
                                        out.data = item
                                        try:
                                            yield out
                                        except BaseException:
                                            raised_here = True
                                            raise
                                        continue
                                    ev = TOKEN_CHUNK
                                else:
                                    classified = classify_item(item, int(position), mode, validate)
                                    if type(classified) is Event:
                                        ev = classified
                                        if ev is ERROR:
                                            error = item
                                    else:
                                        error, ev = classified, ERROR  # type: ignore[assignment]
                            except Exception as exc:
                                if raised_here:
                                    raise
                                # Even a plain dict's lookup runs the == of a key whose hash is
                                # the field name's, and that may raise, as may a hostile item's
                                # accessors in classify_item: the item is unreadable.
                                error, ev = unreadable_item(int(position), exc), _ITEM_UNREADABLE
                            # A step that only forwards and stays put is recorded without the
                            # general dispatch.  Same decision, fewer steps.
                            state = machine.state
                            step = state.successors.get(ev)
                            if step is not None and step.actions is FORWARD_ONLY and step.after is state:
                                if ev is TOKEN_CHUNK:
                                    token_state, token_step = state, step
                                record(step)
                                out = forwarded()
                                out.data = item
                                yield out
                                continue
                        except BaseException:
                            raised_here = True
                            raise
                        break
                    else:
                        self.catch_up_with_context()
                        if self.perform(self.fire(_END)):
                            await self.close_engine_stream()
                        # The engine's generator has finished; hold nothing of it.
                        self.stream = None
                        return
                except asyncio.CancelledError:
                    if raised_here or _cancelled_from_outside():
                        raise
                    item, ev = None, _STREAM_RAISED
                    error = DynamoError(BackendError.CANCELLED, "the engine's stream raised CancelledError")
                except Exception as exc:
                    if raised_here:
                        raise
                    item, error, ev = None, as_dynamo_error(exc), _STREAM_RAISED
                except GeneratorExit:
                    if raised_here:
                        raise
                    # A consumer closing this stream throws GeneratorExit at a yield, never
                    # into a read: here it can only be the engine's own doing.
                    item, ev = None, _STREAM_RAISED
                    error = DynamoError(BackendError.UNKNOWN, "the engine's stream raised GeneratorExit")
                if machine.state.control is _DONE:
                    # Dropped from another task while this read was pending.
                    await self.close_engine_stream()
                    return
                if ev.ends_stream:
                    self.catch_up_with_context()
                actions = self.fire(ev)
                for index, action in enumerate(actions):
                    if action is _FORWARD_DATA or action is _FORWARD_ERROR:
                        out = Annotated(item) if action is _FORWARD_DATA else Annotated(error=error)
                        try:
                            yield out
                        except GeneratorExit:
                            # The consumer left mid-step: what the step still owes is owed anyway.
                            if self.perform(actions[index + 1 :]):
                                await self.close_engine_stream()
                            raise
                    elif self.perform((action,)):
                        await self.close_engine_stream()
                if machine.state.control is _DONE:
                    return
        except (GeneratorExit, asyncio.CancelledError):
            await self.ended_by(_DROP)
            raise
        except BaseException:
            await self.ended_by(_STREAM_INTERRUPTED)
            raise


class _Reads:
    """An engine iterator that is not an async generator, read through its own
    ``__anext__``: ``async for`` would call its ``__aiter__`` a second time."""

    __slots__ = ("_next",)

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self._next = stream.__anext__

    def __aiter__(self) -> _Reads:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._next()


def _cancelled_from_outside() -> bool:
    """Whether a CancelledError is the consumer's task being cancelled (a drop),
    rather than the engine raising it on its own (an engine failure)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class ResponseStream:
    """The response stream of one request: an async iterator of :class:`Annotated`.

    Dropping it (``aclose()``, or letting it and the iterator ``async for``
    took from it be garbage-collected) is the protocol's *drop* event.
    """

    __slots__ = ("_driver", "_items")

    def __init__(self, driver: _RequestDriver) -> None:
        self._driver = driver
        self._items = driver.run()
        _drop_when_collected(self._items, driver)

    def __aiter__(self) -> AsyncIterator[Annotated]:
        # The driver's generator itself: ``async for`` then reads it with no
        # Python frame of this object's in between.
        return self._items

    def __anext__(self) -> Awaitable[Annotated]:
        return self._items.__anext__()

    async def aclose(self) -> None:
        """Drop the stream.  If another task is waiting for its next item, that
        read ends the stream when it returns."""
        if getattr(self._items, "ag_running", False):
            self._driver.abandon()
            return
        await self._items.aclose()  # type: ignore[attr-defined]
        await self._driver.ended_by(_DROP)

    @property
    def machine(self) -> RequestMachine:
        return self._driver.machine

    @property
    def trace(self) -> list[Step]:
        return self._driver.machine.history


_WATCHED: set[weakref.ref[AsyncIterator[Annotated]]] = set()
"""One weak reference per live response generator, kept here so that neither the
generator nor its driver holds it (which would make a reference cycle)."""


def _drop_when_collected(items: AsyncIterator[Annotated], driver: _RequestDriver) -> None:
    """A consumer that forgets the stream drops it: when the last reference to its
    generator goes (the stream's or an ``async for``'s), the request hears a drop."""

    def collected(watch: weakref.ref[AsyncIterator[Annotated]]) -> None:
        _WATCHED.discard(watch)
        driver.abandon()

    _WATCHED.add(weakref.ref(items, collected))
