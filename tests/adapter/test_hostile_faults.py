"""Faults the adapter must contain (spec section 14): an engine whose items raise when read, a stream
object that is no iterator, interrupts, a failing trace sink, best-effort work that swallows its
cancellation, and signals from other threads landing at the worst moment or after the loop closed.

Each test states what a user of the adapter would see: the items delivered, the typed error, the
exception that reaches the caller, whether the request still watches its context, whether abort
ran.  Through :class:`hostile_helpers.Harness` each also checks that no task leaked and that every
recorded history is a legal model run.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model import BackendError, DynamoError, Mode, Step
from dynamo_backend_protocol.reference import Context, EngineAdapter, JsonlTraceWriter, stop, token
from hostile_helpers import (
    HOSTILE_TIMEOUT,
    REQUEST,
    Chunk,
    Harness,
    HostileEngine,
    collect,
    data_of,
    error_of,
    hostile_test,
    let_callbacks_run,
    next_item,
    run_in_thread,
)

AGG = Mode.AGGREGATED
DECODE = Mode.DECODE
BOUND = 20 * HOSTILE_TIMEOUT
"""What "returns at the bound" means in these tests: far above the bound, far below the test deadline."""


class Yields(HostileEngine):
    """Yields the given items in order, counting its generator's start and ``finally``."""

    def __init__(self, *items: object) -> None:
        super().__init__()
        self.items = items

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[object]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[object]:
        with self.lifetime():
            for item in self.items:
                yield item


# --------------------------------------------------------------------------- items whose accessors raise


class RaisingGet(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise ZeroDivisionError("division by zero in get")


class RaisingContains(dict[str, Any]):
    def __contains__(self, key: object) -> bool:
        raise ZeroDivisionError("division by zero in __contains__")


class RaisingGetItem(dict[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise ZeroDivisionError("division by zero in __getitem__")


class UnprintableToken:
    """A token id that is not an int and whose repr raises while the error message is built."""

    def __repr__(self) -> str:
        raise ZeroDivisionError("division by zero in __repr__")


class AmbiguousArray:
    """What a numpy array does when asked whether it is empty."""

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    def __len__(self) -> int:
        return 2


class HashesLikeFinishReason:
    """A key of a plain dict that hashes as "finish_reason" does and raises when compared: looking
    "finish_reason" up in that dict runs this key's ``==``."""

    def __hash__(self) -> int:
        return hash("finish_reason")

    def __eq__(self, other: object) -> bool:
        raise ZeroDivisionError("division by zero in __eq__")


ACCESSOR_FAULTS: list[tuple[str, object, bool, str]] = [
    ("plain-dict-key-eq", {"token_ids": [2], HashesLikeFinishReason(): 1}, True, "ZeroDivisionError"),
    ("get", RaisingGet(token_ids=[2]), True, "ZeroDivisionError"),
    ("contains", RaisingContains(token_ids=[2]), True, "ZeroDivisionError"),
    ("getitem", RaisingGetItem(token_ids=[2], completion_usage={"prompt_tokens": 1}), True, "ZeroDivisionError"),
    ("repr", {"token_ids": [UnprintableToken()]}, True, "ZeroDivisionError"),
    ("array-unvalidated", {"token_ids": AmbiguousArray()}, False, "ValueError"),
]


@pytest.mark.parametrize(
    ("bad_item", "validate", "exception"), [case[1:] for case in ACCESSOR_FAULTS], ids=[c[0] for c in ACCESSOR_FAULTS]
)
@hostile_test
async def test_item_whose_accessors_raise_ends_the_request_with_one_typed_error(
    bad_item: object, validate: bool, exception: str
) -> None:
    """FAULT-ENGINE-RAISES: an item that raises when the adapter reads it must not let the raw exception
    into the consumer's ``async for``: the token before it arrives, then one typed error naming the
    item's position and the exception, then the end; the engine's generator is closed and the
    request no longer watches its context, so a late stop never reaches ``engine.abort``."""
    engine = Yields(token(1), bad_item, stop())
    harness = Harness(engine, validate=validate)
    context = Context()
    items = await collect(await harness.generate(context))
    assert data_of(items[0]) == token(1)
    assert len(items) == 2
    error = error_of(items[1])
    assert error.kind is BackendError.UNKNOWN
    assert "engine item #2" in error.message and exception in error.message
    assert engine.record.generators_finalized == 1
    assert not context.has_listeners()
    context.stop_generating()
    await harness.released()
    assert engine.aborts == 0


class UnprintableFailure(Exception):
    def __str__(self) -> str:
        raise ZeroDivisionError("division by zero in __str__")


class RaisesUnprintable(HostileEngine):
    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            raise UnprintableFailure


@hostile_test
async def test_engine_exception_whose_message_raises_still_becomes_a_typed_error() -> None:
    """FAULT-ENGINE-RAISES: turning the engine's exception into a typed error must not itself fail
    when the exception cannot be printed; the consumer gets the token and a typed error naming the type."""
    harness = Harness(RaisesUnprintable())
    items = await collect(await harness.generate())
    await harness.released()
    assert data_of(items[0]) == token(1)
    assert "UnprintableFailure" in error_of(items[1]).message


# --------------------------------------------------------------------------- a stream that is no iterator


class AiterReturnsGarbage:
    def __aiter__(self) -> object:
        return 42


class GeneratesGarbageStream(HostileEngine):
    def generate(self, request: dict[str, Any], context: Context) -> object:
        return AiterReturnsGarbage()


@hostile_test
async def test_aiter_returning_a_non_iterator_is_a_typed_setup_failure() -> None:
    """FAULT-ENGINE-RAISES: a stream whose ``__aiter__`` returns something without ``__anext__`` must
    fail at setup with a typed error naming what it returned, not at the first read with an
    AttributeError, and leave nothing watching the context."""
    traces: list[list[Step]] = []
    harness = Harness(GeneratesGarbageStream(), trace_sink=lambda _request, steps: traces.append(list(steps)))
    context = Context()
    with pytest.raises(DynamoError) as raised:
        await harness.generate(context)
    await harness.released()
    assert "__aiter__" in raised.value.message and "int" in raised.value.message
    assert not context.has_listeners()
    assert [[step.event.name for step in trace] for trace in traces] == [["setup_failed"]]


# --------------------------------------------------------------------------- interrupts


class Interrupted(HostileEngine):
    def __init__(self, interrupt: type[BaseException], where: str) -> None:
        super().__init__()
        self.interrupt = interrupt
        self.where = where

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        if self.where == "setup":
            raise self.interrupt()
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            raise self.interrupt()


INTERRUPTS = [KeyboardInterrupt, SystemExit]


@pytest.mark.parametrize("interrupt", INTERRUPTS, ids=lambda kind: kind.__name__)
@hostile_test
async def test_interrupt_mid_stream_propagates_and_the_request_still_ends(interrupt: type[BaseException]) -> None:
    """FAULT-INTERRUPT: KeyboardInterrupt and SystemExit from the engine reach the consumer unchanged
    (the worker must be able to stop), yet the request still ends: Done, no watch left, and a
    later stop does not call ``engine.abort`` on it."""
    engine = Interrupted(interrupt, "stream")
    harness = Harness(engine)
    context = Context()
    stream = await harness.generate(context)
    assert data_of(await next_item(stream)) == token(1)
    with pytest.raises(interrupt):
        await next_item(stream)
    assert stream.machine.control.value == "Done"
    assert not context.has_listeners()
    context.stop_generating()
    await harness.released()
    assert engine.aborts == 0


@pytest.mark.parametrize("interrupt", INTERRUPTS, ids=lambda kind: kind.__name__)
@hostile_test
async def test_interrupt_at_setup_propagates_and_the_request_is_traced_as_failed_setup(
    interrupt: type[BaseException],
) -> None:
    """FAULT-INTERRUPT: an interrupt while the engine sets up reaches the caller unchanged, and the
    request still ends (as a failed setup, traced like one) with nothing watching its context."""
    traces: list[list[Step]] = []
    harness = Harness(Interrupted(interrupt, "setup"), trace_sink=lambda _request, steps: traces.append(list(steps)))
    context = Context()
    with pytest.raises(interrupt):
        await harness.generate(context)
    await harness.released()
    assert not context.has_listeners()
    assert [[step.event.name for step in trace] for trace in traces] == [["setup_failed"]]


class RaisesGeneratorExit(HostileEngine):
    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            raise GeneratorExit


@hostile_test
async def test_engine_raised_generator_exit_is_an_engine_failure_not_a_drop() -> None:
    """FAULT-ENGINE-RAISES: the consumer did not leave, so an engine raising GeneratorExit itself is
    an engine failure: the consumer gets the token, one typed error naming GeneratorExit, then the end."""
    harness = Harness(RaisesGeneratorExit())
    stream = await harness.generate()
    items = await collect(stream)
    await harness.released()
    assert data_of(items[0]) == token(1)
    assert "GeneratorExit" in error_of(items[1]).message
    assert [step.event.name for step in stream.trace][-1] == "error"


# --------------------------------------------------------------------------- a failing trace sink


def disk_full(request: str, steps: Any) -> None:
    raise OSError(28, "No space left on device")


def closed_writer() -> JsonlTraceWriter:
    out = io.StringIO()
    out.close()
    return JsonlTraceWriter(out)


@pytest.mark.parametrize("make_sink", [lambda: disk_full, closed_writer], ids=["disk-full", "closed-file"])
@hostile_test
async def test_failing_trace_sink_never_touches_the_stream(make_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    """FAULT-SINK-ISOLATED: the client of each request still gets every chunk and the terminal, the
    engine's generator is closed and the watch released; the sink's failures are counted, and
    logged once rather than once per request."""
    engine = Yields(token(1), stop())
    harness = Harness(engine, trace_sink=make_sink())
    contexts = [Context(), Context()]
    with caplog.at_level(logging.WARNING, logger="dynamo_backend_protocol.reference.adapter"):
        for context in contexts:
            items = await collect(await harness.generate(context))
            assert [data_of(item) for item in items] == [token(1), stop()]
    await harness.released()
    assert engine.record.generators_finalized == 2
    assert not any(context.has_listeners() for context in contexts)
    assert harness.adapter.sink_failures == 2
    assert len([record for record in caplog.records if "trace_sink" in record.getMessage()]) == 1


# --------------------------------------------------------------------------- bounds that hold


class SwallowsCancelInFinally(HostileEngine):
    """A token and a terminal, then a ``finally`` that swallows its cancellation and waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            try:
                yield token(1)
                yield stop()
            finally:
                await _ignore_cancellation_until(self.gate, self.record)


async def _ignore_cancellation_until(gate: asyncio.Event, record: Any) -> None:
    """Swallow the first cancellation and go on waiting for ``gate``; a second one gets through, so a
    test that has to cancel the wait itself (when the adapter did not give up) still ends."""
    while not gate.is_set():
        try:
            await gate.wait()
        except asyncio.CancelledError:
            record.finally_cancelled += 1
            if record.finally_cancelled > 1:
                raise


@hostile_test
async def test_close_timeout_bounds_a_finally_that_swallows_cancellation() -> None:
    """FAULT-CLEANUP-BOUNDED: close_timeout is a bound, not a request: a ``finally`` that swallows its
    cancellation keeps the consumer no longer than the bound, the close is counted as failed and
    abandoned, and once the engine gives up the abandoned close leaves nothing behind."""
    engine = SwallowsCancelInFinally()
    harness = Harness(engine, close_timeout=HOSTILE_TIMEOUT)
    try:
        async with asyncio.timeout(BOUND):
            items = await collect(await harness.generate())
        assert [data_of(item) for item in items] == [token(1), stop()]
        assert harness.adapter.close_failures == 1
        await let_callbacks_run()
        assert engine.record.finally_cancelled == 1, "the close was given up without cancelling it"
        assert harness.adapter.abandoned_tasks == 1
    finally:
        engine.gate.set()  # or the failing test's loop could never finish
    await let_callbacks_run()
    assert harness.adapter.abandoned_tasks == 0
    await harness.released()


class AbortSwallowsCancel(HostileEngine):
    """Waits for the stop, ends with a stop terminal; its abort swallows its cancellation and waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream(context)

    async def _stream(self, context: Context) -> AsyncIterator[Chunk]:
        yield token(1)
        await context.async_killed_or_stopped()
        yield stop()

    async def abort(self, context: Context) -> None:
        self.record.aborts_started += 1
        await _ignore_cancellation_until(self.gate, self.record)


@hostile_test
async def test_abort_timeout_bounds_an_abort_that_swallows_cancellation() -> None:
    """FAULT-CLEANUP-BOUNDED: ``settle()`` returns once abort_timeout has passed even when the abort
    ignores its cancellation; the abort is counted as failed and abandoned."""
    engine = AbortSwallowsCancel()
    harness = Harness(engine, abort_timeout=HOSTILE_TIMEOUT)
    context = Context()
    try:
        stream = await harness.generate(context)
        assert data_of(await next_item(stream)) == token(1)
        context.stop_generating()
        assert [data_of(item) for item in await collect(stream)] == [stop()]
        async with asyncio.timeout(BOUND):
            await harness.adapter.settle()
        assert harness.adapter.abort_failures == 1
        assert engine.aborts == 1
    finally:
        engine.gate.set()  # or the failing test's loop could never finish
    await let_callbacks_run()
    assert harness.adapter.abandoned_tasks == 0
    await harness.released()


# --------------------------------------------------------------------------- signals from threads


class StopsFromThreadOnFirstLook(Context):
    """A context that another thread stops just after the adapter first reads its signals: the
    worst moment for a request that has not started listening yet."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def signals(self) -> tuple[Any, ...]:
        seen = super().signals()
        if self.armed:
            self.armed = False
            run_in_thread(self.stop_generating)
        return seen


@hostile_test
async def test_stop_from_a_thread_during_setup_is_heard_before_the_stream_is_read() -> None:
    """FAULT-SIGNAL-ANY-THREAD: a stop landing while the adapter sets up the stream must reach the
    model on the next loop turn, so abort runs before the engine's 200 tokens are read, not after
    the terminal."""
    engine = Yields(*(token(n) for n in range(200)), stop())
    harness = Harness(engine)
    context = StopsFromThreadOnFirstLook()
    stream = await harness.generate(context)
    await let_callbacks_run()
    assert engine.aborts == 1, "the stop was not heard until the stream ended"
    assert len(await collect(stream)) == 201
    await harness.released()
    assert engine.aborts == 1


@hostile_test
async def test_thread_first_token_before_a_drop_still_releases_the_deferred_abort() -> None:
    """FAULT-SIGNAL-ANY-THREAD (DECODE-DEFER): a decode request stopped before first-token defers its
    abort; a first-token notice from another thread that completed before the consumer drops the
    stream must release that abort, as the seed does, even though no loop turn passed in between."""
    engine = Yields({"token_ids": [], "index": 0}, token(1), stop())
    harness = Harness(engine, DECODE)
    context = Context()
    stream = await harness.generate(context)
    assert data_of(await next_item(stream)) == {"token_ids": [], "index": 0}
    context.stop_generating()
    run_in_thread(context.notify_first_token)
    await stream.aclose()
    await harness.released()
    assert engine.aborts == 1
    assert engine.record.abort_threads == [threading.get_ident()]


@pytest.mark.parametrize("thread", ["other-thread", "same-thread"])
def test_signal_after_the_loop_closed_never_raises_in_the_signaller(thread: str) -> None:
    """FAULT-SIGNAL-ANY-THREAD: a context outlives its event loop (a request set up but never read when
    the worker's loop ended); stopping, killing or notifying it afterwards, from any thread, must
    not raise the adapter's 'Event loop is closed' in the signaller."""
    context = Context()
    kept: list[object] = []

    async def serve() -> None:
        kept.append(await EngineAdapter(Yields(token(1), stop()), DECODE).generate(REQUEST, context))

    asyncio.run(serve())
    errors: list[BaseException] = []

    def signal() -> None:
        try:
            context.notify_first_token()
            context.stop_generating()
            context.kill()
        except BaseException as error:
            errors.append(error)

    if thread == "other-thread":
        run_in_thread(signal)
    else:
        signal()
    assert errors == []
