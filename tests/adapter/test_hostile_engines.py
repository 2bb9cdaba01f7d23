"""Hostile engines: each breaks the engine side of the protocol in one way.

Every test states the behaviour the adapter must end in (a clear typed error
or a documented behaviour) and, through :class:`hostile_helpers.Harness`,
that nothing crashed, no task leaked, the recorded history is a legal model
run and the test finished within its deadline.  Expected values come from
the protocol (PROTOCOL-NOTES.md, the seed's ``adapter.rs``, the validation
rules of ``model.chunks``), never from running the adapter.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from dynamo_backend_protocol.model import BackendError, DynamoError, Mode
from dynamo_backend_protocol.reference import (
    Context,
    EngineConfig,
    cancelled,
    start_engine,
    stop,
    token,
    usage,
)
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


# --------------------------------------------------------------------------- start


class StartBroken(Exception):
    """What the broken ``start`` raises; a private type so identity is unambiguous."""


class RaisesInStart(HostileEngine):
    """Current-Dynamo ``async def start(worker_id)`` that raises."""

    def __init__(self) -> None:
        super().__init__()
        self.error = StartBroken("model weights missing")

    async def start(self, worker_id: int) -> EngineConfig:
        self.record.start_calls += 1
        raise self.error

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            yield stop()


class RaisesInLegacyStart(RaisesInStart):
    """Older-Dynamo plain ``def start()`` (no worker id) that raises."""

    def start(self) -> EngineConfig:  # type: ignore[override]
        self.record.start_calls += 1
        raise self.error


@pytest.mark.parametrize("engine_type", [RaisesInStart, RaisesInLegacyStart], ids=["async-worker-id", "sync-legacy"])
@hostile_test
async def test_start_exception_propagates_unchanged(engine_type: type[RaisesInStart]) -> None:
    """A failing start must reach the worker as the very exception the engine raised:
    the worker decides (cleanup on partial state, exit), so nothing may wrap or swallow it."""
    engine = engine_type()
    with pytest.raises(StartBroken) as raised:
        await start_engine(engine, 7)
    assert raised.value is engine.error
    assert engine.record.start_calls == 1


@hostile_test
async def test_adapter_never_calls_start() -> None:
    """Starting is the worker's job: the adapter serves a request without ever calling start,
    so an engine whose start raises is not disturbed by the adapter."""
    engine = RaisesInStart()
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == [token(1), stop()]
    assert engine.record.start_calls == 0


# --------------------------------------------------------------------------- generate setup


class SetupBroken(Exception):
    pass


class RaisesInSetup(HostileEngine):
    """Base of the setup failures: stops the request's context (the client left while the
    engine was setting up), then raises ``error`` before any stream exists."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error


class RaisesInCoroutineSetup(RaisesInSetup):
    """``async def generate`` (returns the stream when awaited) that fails instead."""

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        context.stop_generating()
        await asyncio.sleep(0)
        raise self.error


class RaisesInPlainSetup(RaisesInSetup):
    """Plain ``def generate`` that raises instead of returning a stream."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        context.stop_generating()
        raise self.error


SETUP_STYLES: list[type[RaisesInSetup]] = [RaisesInCoroutineSetup, RaisesInPlainSetup]
SETUP_IDS = ["coroutine", "plain"]


@pytest.mark.parametrize("engine_type", SETUP_STYLES, ids=SETUP_IDS)
@hostile_test
async def test_setup_plain_exception_becomes_unknown_dynamo_error(
    engine_type: type[RaisesInSetup],
) -> None:
    """An untyped setup failure must still reach the caller as a DynamoError, of kind
    Unknown, naming the exception type and keeping its message, so the runtime can report it."""
    original = SetupBroken("no KV blocks free")
    engine = engine_type(original)
    harness = Harness(engine)
    with pytest.raises(DynamoError) as raised:
        await harness.generate()
    await harness.released()
    assert raised.value.kind is BackendError.UNKNOWN
    assert raised.value.message == "SetupBroken: no KV blocks free"
    assert raised.value.__cause__ is original


@pytest.mark.parametrize("engine_type", SETUP_STYLES, ids=SETUP_IDS)
@hostile_test
async def test_setup_typed_error_keeps_kind_and_message(engine_type: type[RaisesInSetup]) -> None:
    """A typed setup failure is returned as that error (seed: setup error propagates with kind
    and message intact), so the frontend can tell a bad request from a broken engine."""
    original = DynamoError(BackendError.INVALID_ARGUMENT, "max_tokens must be positive")
    harness = Harness(engine_type(original))
    with pytest.raises(DynamoError) as raised:
        await harness.generate()
    await harness.released()
    assert raised.value.kind is BackendError.INVALID_ARGUMENT
    assert raised.value.message == "max_tokens must be positive"


@pytest.mark.parametrize("engine_type", SETUP_STYLES, ids=SETUP_IDS)
@hostile_test
async def test_setup_failure_never_aborts_even_when_stopped(engine_type: type[RaisesInSetup]) -> None:
    """No stream ever existed, so there is nothing to abort (STREAM-SETUP-FAILURE): a stop seen
    during setup must not make the adapter call engine.abort on a request the engine never started."""
    harness = Harness(engine_type(SetupBroken("boom")))
    context = Context()
    with pytest.raises(DynamoError):
        await harness.generate(context)
    await harness.released()
    assert context.is_stopped()
    assert harness.adapter.engine.aborts == 0


class ReturnsAList(HostileEngine):
    """``generate`` that returns a plain list instead of an async iterator."""

    def generate(self, request: dict[str, Any], context: Context) -> list[Chunk]:
        return [token(1), stop()]


@hostile_test
async def test_generate_returning_non_stream_is_a_typed_setup_error() -> None:
    """Something that is not an async iterator cannot be streamed: the caller must get a setup
    error naming what was returned, not a crash on the first read."""
    engine = ReturnsAList()
    harness = Harness(engine)
    with pytest.raises(DynamoError) as raised:
        await harness.generate()
    await harness.released()
    assert raised.value.kind is BackendError.UNKNOWN
    assert "list" in raised.value.message
    assert engine.aborts == 0


class HangsInSetup(HostileEngine):
    """``async def generate`` that never returns a stream (waits for a KV slot forever)."""

    def __init__(self) -> None:
        super().__init__()
        self.setup_cancelled = 0

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.setup_cancelled += 1
            raise
        raise AssertionError("unreachable")


@hostile_test
async def test_hanging_setup_can_be_abandoned_by_the_caller() -> None:
    """A setup that never returns must leave the caller in control: its own timeout cancels the
    setup, nothing is left running, and a stop during the hang never reaches engine.abort (there
    is no stream to abort)."""
    engine = HangsInSetup()
    harness = Harness(engine)
    context = Context()
    pending = asyncio.get_running_loop().create_task(harness.generate(context))
    await let_callbacks_run()
    context.stop_generating()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pending, HOSTILE_TIMEOUT)
    await harness.released()
    assert engine.setup_cancelled == 1
    assert engine.aborts == 0


# --------------------------------------------------------------------------- mid-stream failures


class EngineCrashed(Exception):
    pass


class RaisesMidStream(HostileEngine):
    """Two tokens, then raises; anything after the raise is unreachable."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            yield token(2)
            raise self.error


@hostile_test
async def test_mid_stream_exception_becomes_one_error_item_after_forwarded_chunks() -> None:
    """A crash mid-stream must not lose what was already produced: the chunks before it reach
    downstream in order, then exactly one Unknown error item naming the exception, then the end."""
    engine = RaisesMidStream(EngineCrashed("CUDA error: out of memory"))
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert len(items) == 3
    assert [data_of(item) for item in items[:2]] == [token(1), token(2)]
    failure = error_of(items[2])
    assert failure.kind is BackendError.UNKNOWN
    assert failure.message == "EngineCrashed: CUDA error: out of memory"
    assert engine.record.generators_finalized == 1
    assert engine.aborts == 0


@hostile_test
async def test_mid_stream_typed_error_keeps_kind() -> None:
    """A typed mid-stream error keeps its kind (seed: typed error becomes an error item), so an
    EngineShutdown is not reported as an anonymous failure."""
    engine = RaisesMidStream(DynamoError(BackendError.ENGINE_SHUTDOWN, "worker draining"))
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert len(items) == 3
    assert error_of(items[2]) == DynamoError(BackendError.ENGINE_SHUTDOWN, "worker draining")


class YieldsScript(HostileEngine):
    """Yields the given items in order, counting what was actually pulled from it."""

    def __init__(self, items: Sequence[object]) -> None:
        super().__init__()
        self.items = list(items)

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        with self.lifetime():
            for item in self.items:
                self.record.items_yielded += 1
                yield item


@hostile_test
async def test_yielded_typed_error_becomes_error_item_and_ends_stream() -> None:
    """An engine may yield its typed error instead of raising it: the same error item, kind
    kept, after the chunks before it; the engine is not read further and its stream is closed."""
    failure = DynamoError(BackendError.STREAM_INCOMPLETE, "lost the prefill peer")
    engine = YieldsScript([token(1), failure, token(2), stop()])
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert len(items) == 2
    assert data_of(items[0]) == token(1)
    assert error_of(items[1]) == DynamoError(BackendError.STREAM_INCOMPLETE, "lost the prefill peer")
    assert engine.record.items_yielded == 2
    assert engine.record.generators_finalized == 1


@hostile_test
async def test_items_after_terminal_are_never_read() -> None:
    """Nothing may follow a terminal: an engine that keeps yielding after its terminal is not read
    any further (STREAM-TERMINAL-LAST), so the extra chunks never reach downstream, and its stream
    is closed."""
    engine = YieldsScript([token(1), stop(), token(2), stop()])
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == [token(1), stop()]
    assert engine.record.items_yielded == 2
    assert engine.record.generators_finalized == 1


@hostile_test
async def test_stream_ending_without_terminal_ends_quietly() -> None:
    """A stream that just ends without a terminal is passed on as it is (the upstream validator
    does not fail it; the conformance kit does): every chunk forwarded, no invented terminal or
    error, no abort."""
    engine = YieldsScript([token(1), token(2)])
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == [token(1), token(2)]
    assert engine.aborts == 0


class RaisesCancelledError(HostileEngine):
    """A token, then raises asyncio.CancelledError on its own (as some engines do when their
    internal request is aborted), although nobody cancelled the consumer."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            raise asyncio.CancelledError


@hostile_test
async def test_engine_raised_cancelled_error_is_an_engine_failure_not_a_drop() -> None:
    """A CancelledError raised by the engine itself is a failure of the engine's stream, not the
    consumer going away: the consumer, which nobody cancelled, must get the chunk and one error
    item and a normal end, not a CancelledError that would make its own task look cancelled."""
    engine = RaisesCancelledError()
    harness = Harness(engine)
    stream = await harness.generate()
    items: list[object] = []
    escaped: BaseException | None = None
    try:
        items.extend([item async for item in stream])
    except asyncio.CancelledError as exc:
        escaped = exc
    await harness.released()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    assert escaped is None, "the engine's CancelledError escaped into a consumer nobody cancelled"
    assert len(items) == 2
    assert engine.aborts == 0

# --------------------------------------------------------------------------- abort failures


class WaitsForCancel(HostileEngine):
    """One token, then waits for the stop and ends with a cancelled terminal (a good stream)."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream(context)

    async def _stream(self, context: Context) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            await context.async_killed_or_stopped()
            yield cancelled().with_usage(usage(3, 1))


class AbortBroken(Exception):
    pass


class RaisesInAbort(WaitsForCancel):
    async def abort(self, context: Context) -> None:
        self.record.aborts_started += 1
        raise AbortBroken("engine core gone")


class RaisesInSyncAbort(WaitsForCancel):
    def abort(self, context: Context) -> None:  # type: ignore[override]
        self.record.aborts_started += 1
        raise AbortBroken("engine core gone")


async def read_stop_read_rest(harness: Harness, context: Context) -> list[Chunk]:
    """Read the first chunk, stop the request, read the rest; all items must be data."""
    stream = await harness.generate(context)
    first = data_of(await next_item(stream))
    context.stop_generating()
    rest = [data_of(item) for item in await collect(stream)]
    return [first, *rest]


@pytest.mark.parametrize("engine_type", [RaisesInAbort, RaisesInSyncAbort], ids=["async", "sync"])
@hostile_test
async def test_raising_abort_leaves_stream_intact(engine_type: type[WaitsForCancel]) -> None:
    """Abort is best effort: when it raises, the stream still delivers the engine's cancelled
    terminal, the failure is counted, and the adapter does not retry (ABORT-ONCE)."""
    engine = engine_type()
    harness = Harness(engine)
    chunks = await read_stop_read_rest(harness, Context())
    await harness.released()
    assert chunks == [token(1), cancelled().with_usage(usage(3, 1))]
    assert engine.aborts == 1
    assert harness.adapter.abort_failures == 1


class HangsInAbort(WaitsForCancel):
    """An abort that never returns (e.g. an RPC to a dead engine core)."""

    async def abort(self, context: Context) -> None:
        self.record.aborts_started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.record.aborts_cancelled += 1
            raise
        self.record.aborts_finished += 1


@hostile_test
async def test_stream_does_not_wait_for_hanging_abort() -> None:
    """The consumer must get the cancelled terminal and the end of the stream while the abort is
    still hanging: cancellation latency must not depend on how long the engine's abort takes."""
    engine = HangsInAbort()
    harness = Harness(engine, abort_timeout=HOSTILE_TIMEOUT)
    chunks = await read_stop_read_rest(harness, Context())
    assert chunks == [token(1), cancelled().with_usage(usage(3, 1))]
    assert harness.adapter.background_tasks == 1, "the abort should still be pending when the stream ends"
    await let_callbacks_run()
    assert engine.record.aborts_started == 1
    assert engine.record.aborts_cancelled == 0, "the stream ended only after the abort was given up"
    assert harness.adapter.abort_failures == 0
    await harness.released()


@hostile_test
async def test_hanging_abort_cancelled_after_timeout() -> None:
    """A hanging abort must be cancelled after abort_timeout and counted, so settle() returns
    and the request holds no task forever."""
    engine = HangsInAbort()
    harness = Harness(engine, abort_timeout=HOSTILE_TIMEOUT)
    await read_stop_read_rest(harness, Context())
    await harness.released()
    assert engine.record.aborts_started == 1
    assert engine.record.aborts_cancelled == 1
    assert engine.record.aborts_finished == 0
    assert harness.adapter.abort_failures == 1


# --------------------------------------------------------------------------- cleanup


class CleanupBroken(Exception):
    pass


class RaisesInCleanup(HostileEngine):
    """Streams normally (or hangs after a stop, or crashes, per request), but its cleanup raises."""

    async def cleanup(self) -> None:
        self.record.cleanup_calls += 1
        raise CleanupBroken("double free")

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream(request)

    async def _stream(self, request: dict[str, Any]) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield token(1)
            if request.get("crash"):
                raise EngineCrashed("crash")
            yield stop()


@hostile_test
async def test_adapter_never_calls_cleanup() -> None:
    """cleanup belongs to the worker lifecycle (after drain, or after a failed start), never to a
    request: whatever way a request ends, the adapter must not call it, so a raising cleanup
    cannot break serving."""
    engine = RaisesInCleanup()
    harness = Harness(engine)
    completed = await collect(await harness.generate())
    crashed = await collect(await harness.generate(request={**REQUEST, "crash": True}))
    dropped = await harness.generate()
    await next_item(dropped)
    await dropped.aclose()
    await harness.released()
    assert len(completed) == 2 and len(crashed) == 2
    assert engine.record.cleanup_calls == 0
    with pytest.raises(CleanupBroken):
        await engine.cleanup()


# --------------------------------------------------------------------------- malformed items


class YieldsThenBad(HostileEngine):
    """A good token, then ``bad``, then a token and a terminal that must never be read."""

    def __init__(self, bad: object) -> None:
        super().__init__()
        self.bad = bad

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        with self.lifetime():
            for item in (token(1), self.bad, token(3), stop()):
                self.record.items_yielded += 1
                yield item


async def run_bad_item(bad: object) -> tuple[YieldsThenBad, list[Chunk], DynamoError]:
    """Stream a good token then ``bad``; returns the engine, the data chunks and the one error."""
    engine = YieldsThenBad(bad)
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert len(items) == 2, f"expected one chunk and one error, got {items!r}"
    return engine, [data_of(items[0])], error_of(items[1])


def assert_names(failure: DynamoError, position: int, field: str) -> None:
    assert failure.kind is BackendError.UNKNOWN
    assert f"#{position}" in failure.message
    assert repr(field) in failure.message
    assert getattr(failure, "position", None) == position
    assert getattr(failure, "field", None) == field


NON_DICTS: list[object] = ["token 5", None, [1, 2], 17, (1,), b"\x00"]


@pytest.mark.parametrize("bad", NON_DICTS, ids=lambda bad: type(bad).__name__)
@hostile_test
async def test_non_dict_item_becomes_error_naming_position_and_item(bad: object) -> None:
    """A chunk must be a dict: anything else is reported as one error item naming its position
    and the field <item>, after the chunks before it, and the engine is not read further."""
    engine, chunks, failure = await run_bad_item(bad)
    assert chunks == [token(1)]
    assert_names(failure, 2, "<item>")
    assert engine.record.items_yielded == 2
    assert engine.record.generators_finalized == 1
    assert engine.aborts == 0


BAD_TOKEN_IDS: list[object] = [-1, 1.5, True, "7", None, 2.0]


@pytest.mark.parametrize("bad", BAD_TOKEN_IDS, ids=repr)
@pytest.mark.parametrize(
    ("shape", "offset"),
    [("single", 0), ("middle", 1), ("terminal", 2)],
)
@hostile_test
async def test_bad_token_id_becomes_error_naming_element_and_position(bad: object, shape: str, offset: int) -> None:
    """token_ids are non-negative ints (bool and integral floats included as wrong): a bad id is
    reported naming token_ids, the element's offset and the item's position, whether the chunk
    has one token (the adapter's fast path), several, or is the terminal."""
    chunk: dict[str, Any]
    if shape == "single":
        chunk = {"token_ids": [bad], "index": 0}
    elif shape == "middle":
        chunk = {"token_ids": [5, bad, 6], "index": 0}
    else:
        chunk = {"token_ids": [5, 6, bad], "index": 0, "finish_reason": "stop"}
    engine, chunks, failure = await run_bad_item(chunk)
    assert chunks == [token(1)]
    assert_names(failure, 2, "token_ids")
    assert f"element {offset}" in failure.message
    assert repr(bad) in failure.message
    assert engine.record.items_yielded == 2


BAD_USAGE: list[object] = [
    {"prompt_tokens": -1, "completion_tokens": 1, "total_tokens": 0},
    {"prompt_tokens": float("nan"), "completion_tokens": 1, "total_tokens": 1},
    {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": float("nan")},
    {"prompt_tokens": 3, "completion_tokens": "1", "total_tokens": 4},
    {"prompt_tokens": 3.0, "completion_tokens": 1, "total_tokens": 4},
    [3, 1, 4],
    "3/1/4",
]


USAGE_IDS = ["negative", "nan-prompt", "nan-total", "str-counter", "float-counter", "list", "str"]


@pytest.mark.parametrize("bad", BAD_USAGE, ids=USAGE_IDS)
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "token"])
@hostile_test
async def test_bad_usage_becomes_error_naming_completion_usage(bad: object, terminal: bool) -> None:
    """Usage counters are unsigned integers upstream: a negative, NaN or non-int counter (or a
    usage that is not an object) is reported as one error item naming completion_usage, on a
    terminal or on a token chunk, and the malformed chunk itself is not forwarded."""
    chunk: dict[str, Any] = {"token_ids": [2], "index": 0, "completion_usage": bad}
    if terminal:
        chunk["finish_reason"] = "length"
    engine, chunks, failure = await run_bad_item(chunk)
    assert chunks == [token(1)]
    assert_names(failure, 2, "completion_usage")
    assert engine.record.items_yielded == 2


HUGE = 100_000


@pytest.mark.parametrize("mode", [AGG, DECODE], ids=str)
@hostile_test
async def test_huge_chunks_forwarded_intact(mode: Mode) -> None:
    """A chunk may carry many tokens at once (speculative decoding, a prefill echo): 100k tokens
    in one chunk, and in the terminal, are forwarded complete, in order, unchanged."""
    chunks: list[Chunk] = [
        {"token_ids": list(range(HUGE)), "index": 0},
        {"token_ids": list(range(HUGE, 2 * HUGE)), "index": 0, "finish_reason": "length",
         "completion_usage": usage(10, 2 * HUGE)},
    ]
    expected = copy.deepcopy(chunks)
    engine = YieldsScript(chunks)
    harness = Harness(engine, mode)
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == expected
    assert data_of(items[0])["token_ids"] == list(range(HUGE))
    assert engine.aborts == 0


@hostile_test
async def test_unknown_extra_keys_forwarded_unchanged() -> None:
    """Dynamo chunk dicts allow extra keys (engine_data, vendor fields): they must reach
    downstream unchanged, on token chunks and on the terminal, and must not be rejected."""
    chunks: list[Chunk] = [
        {"token_ids": [1], "index": 0, "x_vendor": {"kv_hit_rate": 0.5}, "log_probs": [-0.1]},
        {"token_ids": [2, 3], "index": 0, "engine_data": {"slot": 4}, "x_flag": None},
        {"token_ids": [], "index": 0, "finish_reason": "stop", "x_timing": [1.5, 2.5],
         "completion_usage": {**usage(3, 3), "cached_tokens": 2}},
    ]
    expected = copy.deepcopy(chunks)
    harness = Harness(YieldsScript(chunks))
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == expected


# --------------------------------------------------------------------------- hangs after cancellation


class HangsAfterStop(HostileEngine):
    """Yields ``first`` chunks, then never yields again: ignores the stop and parks forever."""

    def __init__(self, first: list[Chunk]) -> None:
        super().__init__()
        self.first = first

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        with self.lifetime():
            for chunk in self.first:
                yield chunk
            await asyncio.Event().wait()


async def prove_hang_then_drop(harness: Harness, context: Context, reads: int) -> int:
    """Read ``reads`` items, stop, prove the next read hangs, drop; returns aborts seen before the drop."""
    stream = await harness.generate(context)
    for _ in range(reads):
        data_of(await next_item(stream))
    context.stop_generating()
    await let_callbacks_run()
    engine = harness.adapter.engine
    assert isinstance(engine, HostileEngine)
    aborts_before_drop = engine.aborts
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(next_item(stream), HOSTILE_TIMEOUT)
    await stream.aclose()
    await harness.released()
    assert engine.record.generators_finalized == 1, "the hung engine stream was not closed"
    return aborts_before_drop


@hostile_test
async def test_agg_hang_after_stop_aborts_once_and_drop_releases() -> None:
    """In agg the abort fires as soon as the stop is seen, without waiting for the engine; a
    consumer that gives up on the hung stream can drop it and everything is released; the drop
    adds no second abort."""
    engine = HangsAfterStop([token(1)])
    aborts_before_drop = await prove_hang_then_drop(Harness(engine), Context(), reads=1)
    assert aborts_before_drop == 1
    assert engine.aborts == 1


@hostile_test
async def test_decode_hang_after_stop_with_first_token_aborts_once() -> None:
    """In decode, after the first token the request is abortable: the stop aborts at once even
    though the engine never yields again, and the drop adds no second abort."""
    engine = HangsAfterStop([token(1)])
    aborts_before_drop = await prove_hang_then_drop(Harness(engine, DECODE), Context(), reads=1)
    assert aborts_before_drop == 1
    assert engine.aborts == 1


@hostile_test
async def test_decode_hang_after_stop_before_first_token_never_aborts() -> None:
    """In decode before any token (only a token-less bootstrap chunk) the abort is deferred; if
    the engine then hangs and the consumer drops, the deferred abort is dropped too (DECODE-DROP):
    aborting would orphan the prefill peer's KV transfer."""
    engine = HangsAfterStop([{"token_ids": [], "index": 0, "bootstrap_room": 9}])
    aborts_before_drop = await prove_hang_then_drop(Harness(engine, DECODE), Context(), reads=1)
    assert aborts_before_drop == 0
    assert engine.aborts == 0


@hostile_test
async def test_hang_after_stop_dropped_by_garbage_collection_releases() -> None:
    """A consumer may just forget a hung stream: garbage collection is a drop, so the engine's
    stream is closed, no task is left and the single abort is not repeated."""
    engine = HangsAfterStop([token(1)])
    harness = Harness(engine)
    context = Context()
    stream = await harness.generate(context)
    data_of(await next_item(stream))
    context.stop_generating()
    await let_callbacks_run()
    del stream
    gc.collect()
    await let_callbacks_run()
    await harness.released()
    assert engine.aborts == 1
    assert engine.record.generators_finalized == 1


# --------------------------------------------------------------------------- closing the engine's stream


class IgnoresCloseInFinally(HostileEngine):
    """Yields a token and a terminal; its ``finally`` yields once more, ignoring aclose()."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        self.record.generators_started += 1
        try:
            yield token(1)
            yield stop()
            yield token(98)
        finally:
            self.record.generators_finalized += 1
            yield token(99)


class IgnoresCloseInExcept(IgnoresCloseInFinally):
    """Catches GeneratorExit and yields instead of finishing."""

    async def _stream(self) -> AsyncIterator[Chunk]:
        self.record.generators_started += 1
        try:
            yield token(1)
            yield stop()
            yield token(98)
        except GeneratorExit:
            self.record.generators_finalized += 1
            yield token(99)


@pytest.mark.parametrize("engine_type", [IgnoresCloseInFinally, IgnoresCloseInExcept], ids=["finally", "except"])
@hostile_test
async def test_generator_ignoring_close_after_terminal_is_reported(engine_type: type[HostileEngine]) -> None:
    """After the terminal the adapter closes the engine's stream; a generator that yields while
    being closed is reported as a close failure, and the consumer still sees exactly the token
    and the terminal, then a normal end (nothing after the terminal, STREAM-TERMINAL-LAST)."""
    engine = engine_type()
    harness = Harness(engine)
    items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == [token(1), stop()]
    assert harness.adapter.close_failures == 1
    assert engine.record.generators_finalized == 1


@hostile_test
async def test_generator_ignoring_close_on_consumer_drop_is_reported() -> None:
    """A consumer dropping the stream makes the adapter close the engine's stream; if that
    generator ignores aclose(), the drop still completes quietly and the failure is counted."""
    engine = IgnoresCloseInFinally()
    harness = Harness(engine)
    stream = await harness.generate()
    assert data_of(await next_item(stream)) == token(1)
    await stream.aclose()
    await harness.released()
    assert harness.adapter.close_failures == 1
    assert engine.aborts == 0


class HangsInFinally(HostileEngine):
    """A token and a terminal, then a ``finally`` that awaits forever (a stuck release)."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        self.record.generators_started += 1
        try:
            yield token(1)
            yield stop()
        finally:
            self.record.generators_finalized += 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.record.finally_cancelled += 1
                raise


@hostile_test
async def test_generator_finally_hang_bounded_by_close_timeout() -> None:
    """A stuck ``finally`` must not keep the consumer from the end of its stream for longer than
    close_timeout: the consumer gets the token, the terminal and the end, the close is cancelled
    and counted."""
    engine = HangsInFinally()
    harness = Harness(engine, close_timeout=HOSTILE_TIMEOUT)
    async with asyncio.timeout(20 * HOSTILE_TIMEOUT):
        items = await collect(await harness.generate())
    await harness.released()
    assert [data_of(item) for item in items] == [token(1), stop()]
    assert harness.adapter.close_failures == 1
    assert engine.record.finally_cancelled == 1


@hostile_test
async def test_generator_finally_hang_on_drop_bounded_by_close_timeout() -> None:
    """Dropping a stream whose engine ``finally`` hangs returns within close_timeout: the consumer's
    aclose() is not held hostage by the engine, and the close is cancelled and counted."""
    engine = HangsInFinally()
    harness = Harness(engine, close_timeout=HOSTILE_TIMEOUT)
    stream = await harness.generate()
    assert data_of(await next_item(stream)) == token(1)
    async with asyncio.timeout(20 * HOSTILE_TIMEOUT):
        await stream.aclose()
    await harness.released()
    assert harness.adapter.close_failures == 1
    assert engine.record.finally_cancelled == 1


# --------------------------------------------------------------------------- foreign threads


class NotifiesFromThread(HostileEngine):
    """Decode engine with a TRT-LLM-style side channel: after the stop, a worker thread reports
    the first token (joined), then the stream ends with a token-less cancelled terminal.

    With ``turn`` the engine gives the loop one turn between the notify and the terminal.
    """

    def __init__(self, *, turn: bool) -> None:
        super().__init__()
        self.turn = turn
        self.notify_thread = 0

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream(context)

    async def _stream(self, context: Context) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield {"token_ids": [], "index": 0}
            await context.async_killed_or_stopped()
            self.notify_thread = run_in_thread(context.notify_first_token)
            if self.turn:
                await let_callbacks_run()
            yield cancelled()


async def stop_and_collect_all(harness: Harness, context: Context) -> list[Chunk]:
    stream = await harness.generate(context)
    first = data_of(await next_item(stream))
    context.stop_generating()
    return [first, *(data_of(item) for item in await collect(stream))]


@hostile_test
async def test_thread_notify_releases_deferred_abort_on_loop_thread() -> None:
    """A first-token notice from an engine thread releases the deferred decode abort: it fires
    exactly once, and on the event loop's thread (engine.abort is a coroutine of the loop)."""
    engine = NotifiesFromThread(turn=True)
    harness = Harness(engine, DECODE)
    chunks = await stop_and_collect_all(harness, Context())
    await harness.released()
    assert chunks[-1] == cancelled()
    assert engine.notify_thread != threading.get_ident()
    assert engine.record.abort_threads == [threading.get_ident()]


class ManyThreadsNotify(HostileEngine):
    """Decode engine whose eight callback threads all report the first token at once after the stop."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        return self._stream(context)

    async def _stream(self, context: Context) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield {"token_ids": [], "index": 0}
            await context.async_killed_or_stopped()
            barrier = threading.Barrier(8)

            def notify() -> None:
                barrier.wait()
                context.notify_first_token()

            threads = [threading.Thread(target=notify) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            await let_callbacks_run()
            yield cancelled()


@hostile_test
async def test_concurrent_thread_notifies_abort_once() -> None:
    """notify_first_token is idempotent, yet eight threads may race through it together: the
    released deferred abort must still fire exactly once (ABORT-ONCE), on the loop's thread."""
    engine = ManyThreadsNotify()
    harness = Harness(engine, DECODE)
    chunks = await stop_and_collect_all(harness, Context())
    await harness.released()
    assert chunks[-1] == cancelled()
    assert engine.record.abort_threads == [threading.get_ident()]

@hostile_test
async def test_thread_notify_just_before_tokenless_terminal_still_aborts() -> None:
    """The notice happened before the terminal (the thread was joined first), so the request had
    reached the abortable state: the abort must fire once (seed: first-token wins the tie, the
    monitor reads the first-token flag before the stream-gone signal), even though the engine gave
    the loop no turn between the two."""
    engine = NotifiesFromThread(turn=False)
    harness = Harness(engine, DECODE)
    chunks = await stop_and_collect_all(harness, Context())
    await harness.released()
    assert chunks[-1] == cancelled()
    assert engine.record.abort_threads == [threading.get_ident()]


class KeepsContext(HostileEngine):
    """Keeps the request's context after its stream ended, to poke it later."""

    def __init__(self, chunks: list[Chunk]) -> None:
        super().__init__()
        self.chunks = chunks
        self.contexts: list[Context] = []

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        self.contexts.append(context)
        return self._stream(context)

    async def _stream(self, context: Context) -> AsyncIterator[Chunk]:
        with self.lifetime():
            yield {"token_ids": [], "index": 0}
            await context.async_killed_or_stopped()
            for chunk in self.chunks:
                yield chunk


@pytest.mark.parametrize("where", ["loop", "thread"])
@hostile_test
async def test_notify_after_stream_end_has_no_effect(where: str) -> None:
    """A decode stream stopped before its first token ends without an abort (DECODE-DROP); a
    first-token notice arriving after the end must not resurrect that abort, nor raise
    (DONE-ABSORBING), from the loop or from an engine thread."""
    engine = KeepsContext([cancelled()])
    harness = Harness(engine, DECODE)
    context = Context()
    chunks = await stop_and_collect_all(harness, context)
    assert chunks[-1] == cancelled()
    if where == "loop":
        context.notify_first_token()
    else:
        run_in_thread(context.notify_first_token)
    await let_callbacks_run()
    await harness.released()
    assert context.first_token_notified()
    assert engine.aborts == 0
    assert harness.adapter.abort_failures == 0


def signal_from_threads(context: Context, signal: str) -> None:
    """Issue ``stop``, ``kill`` or ``stop-then-kill`` from fresh threads, each joined."""
    for part in signal.split("-then-"):
        run_in_thread(context.stop_generating if part == "stop" else context.kill)


SIGNALS = ["stop", "kill", "stop-then-kill"]


@pytest.mark.parametrize("signal", SIGNALS)
@hostile_test
async def test_thread_stop_while_engine_parked_aborts_once_on_loop_thread(signal: str) -> None:
    """A stop or kill issued from another thread (Dynamo's runtime cancels from its own threads)
    while the engine is parked waiting for it is handled on the loop: abort fires exactly once,
    on the loop's thread, however many signals arrive, and the cancelled terminal is forwarded."""
    engine = KeepsContext([cancelled()])
    harness = Harness(engine)
    context = Context()
    stream = await harness.generate(context)
    assert data_of(await next_item(stream)) == {"token_ids": [], "index": 0}
    reader = asyncio.get_running_loop().create_task(collect(stream))
    await let_callbacks_run()
    assert not reader.done(), "the engine should be parked waiting for the stop"
    signal_from_threads(context, signal)
    items = await reader
    await harness.released()
    assert [data_of(item) for item in items] == [cancelled()]
    assert engine.record.abort_threads == [threading.get_ident()]


@pytest.mark.parametrize("signal", SIGNALS)
@hostile_test
async def test_thread_stop_seen_by_engine_first_still_aborts_once(signal: str) -> None:
    """A stop or kill from another thread lands while the engine is between items; the engine
    sees is_stopped() on its next step and ends with a cancelled terminal before the loop had a
    turn.  The request was cancelled before its stream ended, so the abort must still fire, once,
    on the loop's thread (ABORT-IMMEDIATE: agg aborts on every observed cancellation)."""
    engine = KeepsContext([cancelled()])
    harness = Harness(engine)
    context = Context()
    stream = await harness.generate(context)
    assert data_of(await next_item(stream)) == {"token_ids": [], "index": 0}
    signal_from_threads(context, signal)
    items = await collect(stream)
    await harness.released()
    assert [data_of(item) for item in items] == [cancelled()]
    assert engine.record.abort_threads == [threading.get_ident()]


# --------------------------------------------------------------------------- sanity of the harness


@hostile_test
async def test_harness_detects_a_leaked_task() -> None:
    """The leak check must be able to fail: a task left running after the adapter settles is
    reported by Harness.released()."""
    harness = Harness(HostileEngine())
    leaked = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    with pytest.raises(AssertionError, match="tasks left running"):
        await harness.released()
    leaked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaked
