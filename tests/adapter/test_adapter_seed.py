"""The ten tests of the seed's ``adapter.rs``, run against the Python reference adapter.

Each test keeps the seed test's name stem and asserts the same facts through
the public API only.  Where the seed lets tokio's clock run (sleeps, paused
time), these tests give the loop a few iterations with ``asyncio.sleep(0)``
and then wait for the adapter's background work with ``adapter.settle()``:
no real time passes and nothing is timed.
"""

from __future__ import annotations

import asyncio

from adapter_helpers import (
    REQUEST,
    CoroutineEngine,
    ListEngine,
    Notify,
    ParkedEngine,
    Raise,
    ScriptedEngine,
    Wait,
    WaitCancelled,
    async_test,
    collect,
    data_of,
    ended,
    error_of,
    let_callbacks_run,
    next_item,
    setup_failure,
)
from dynamo_backend_protocol.reference import (
    BackendError,
    Context,
    DisaggregationMode,
    DynamoError,
    EngineAdapter,
    cancelled,
    length,
    token,
    usage,
)


@async_test
async def test_adapter_maps_chunks_to_outputs() -> None:
    """Every engine chunk reaches downstream as one data item, in order, unchanged;
    a clean completion never calls engine.abort."""
    engine = ListEngine([token(11), length().with_tokens([22]).with_usage(usage(3, 2))])
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)

    stream = await adapter.generate(REQUEST, Context())
    collected = await collect(stream)
    await adapter.settle()

    assert len(collected) == 2
    first = data_of(collected[0])
    assert first["token_ids"] == [11]
    assert "finish_reason" not in first
    second = data_of(collected[1])
    assert second["token_ids"] == [22]
    assert second["finish_reason"] == "length"
    assert second["completion_usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert engine.aborts == 0, "clean completion must not call engine.abort"


@async_test
async def test_adapter_cancellation_triggers_engine_abort() -> None:
    """A stop mid-stream ends the stream and calls engine.abort exactly once, with
    the request's own context, so the engine can free what the request holds."""
    engine = ListEngine([token(i) for i in range(100)])
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    first = await next_item(stream)
    assert data_of(first)["token_ids"] == [0]
    context.stop_generating()

    # The engine checks is_stopped() before each chunk, so nothing more arrives
    # and the stream ends: the adapter reads no chunk ahead of the consumer.
    rest = await collect(stream)
    assert rest == [], "stream did not end right after cancellation"

    await adapter.settle()
    assert engine.aborts == 1, "engine.abort should be called exactly once on cancellation"
    assert engine.record.abort_contexts == [context]


@async_test
async def test_adapter_engine_setup_error_propagates() -> None:
    """An engine whose generate fails before a stream exists makes adapter.generate
    raise that error, message intact; there is no stream and no abort."""
    engine = setup_failure(DynamoError(BackendError.UNKNOWN, "init failed"))
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)

    try:
        await adapter.generate(REQUEST, Context())
    except DynamoError as err:
        assert "init failed" in str(err)
    else:
        raise AssertionError("adapter.generate returned a stream for a failed setup")
    await adapter.settle()
    assert engine.aborts == 0


@async_test
async def test_adapter_forwards_terminal_cancel_chunk_to_downstream() -> None:
    """After a stop, the engine's terminal ``cancelled`` chunk still reaches downstream:
    the client learns how its request ended instead of seeing the stream vanish."""
    engine = ScriptedEngine([token(1), WaitCancelled(), cancelled().with_usage(usage(3, 1))])
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    context.stop_generating()

    rest = await collect(stream)
    assert len(rest) == 1, "downstream must receive the engine's terminal cancel chunk"
    assert data_of(rest[0])["finish_reason"] == "cancelled"


@async_test
async def test_adapter_surfaces_typed_invalid_argument_error() -> None:
    """A typed setup error keeps its kind and its message, so the caller can tell a
    bad request (InvalidArgument) from an engine failure."""
    engine = setup_failure(DynamoError(BackendError.INVALID_ARGUMENT, "bad param"))
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)

    try:
        await adapter.generate(REQUEST, Context())
    except DynamoError as err:
        message = str(err)
        assert "BackendInvalidArgument" in message, f"got: {message}"
        assert "bad param" in message, f"got: {message}"
        assert message == "BackendInvalidArgument: bad param"
        assert err.error_type() is BackendError.INVALID_ARGUMENT
    else:
        raise AssertionError("adapter.generate returned a stream for a failed setup")


@async_test
async def test_adapter_forwards_typed_mid_stream_error_as_annotated_error() -> None:
    """A typed error raised mid-stream becomes an error item with its BackendError
    kind intact, and nothing follows it."""
    engine = ScriptedEngine(
        [token(1), Raise(DynamoError(BackendError.INVALID_ARGUMENT, "bad mid-stream"))]
    )
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)
    stream = await adapter.generate(REQUEST, Context())

    first = await next_item(stream)
    assert first.data is not None, "first item carries data"

    err_item = await next_item(stream)
    assert err_item.is_error(), "second item must be an error item"
    err = error_of(err_item)
    assert err.error_type() is BackendError.INVALID_ARGUMENT, "typed BackendError variant must survive end-to-end"
    assert "bad mid-stream" in str(err)

    assert await ended(stream), "no items after the typed error"


@async_test
async def test_decode_defers_abort_until_first_chunk() -> None:
    """In decode mode a stop before the first token does not call engine.abort until
    the first chunk lands: an early abort orphans the prefill peer's KV transfer."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, DisaggregationMode.DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    await let_callbacks_run()
    await adapter.settle()
    assert engine.aborts == 0, "decode worker must not call engine.abort before first-token"

    engine.release.set()
    await next_item(stream)
    await collect(stream)

    await adapter.settle()
    assert engine.aborts == 1, "abort must fire exactly once after first-token observed"


@async_test
async def test_aggregated_fires_abort_immediately() -> None:
    """In aggregated mode a stop calls engine.abort at once, without waiting for a
    token: only decode opts into deferral."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, DisaggregationMode.AGGREGATED)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    await let_callbacks_run()
    await adapter.settle()
    assert engine.aborts == 1, "aggregated worker must fire abort immediately on cancellation"

    engine.release.set()
    await collect(stream)


@async_test
async def test_decode_side_channel_hook_releases_deferred_abort() -> None:
    """A decode engine that signals first-token through ``notify_first_token()`` (TRT-LLM
    style) before any chunk flows gets its abort at once when the request is stopped."""
    release = asyncio.Event()
    engine = CoroutineEngine(setup=[Notify()], script=[Wait(release), length().with_usage(usage(1, 0))])
    adapter = EngineAdapter(engine, DisaggregationMode.DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    await let_callbacks_run()
    await adapter.settle()
    assert engine.aborts == 1, "side-channel notify must release the deferred abort"

    release.set()
    await collect(stream)


@async_test
async def test_decode_stream_drop_without_first_token_does_not_abort() -> None:
    """A decode request stopped and then dropped before its first token never calls
    engine.abort: the deferred abort dies with the stream."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, DisaggregationMode.DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    await stream.aclose()

    await let_callbacks_run()
    await adapter.settle()
    assert engine.aborts == 0, "stream drop before first-token must not fire engine.abort"
