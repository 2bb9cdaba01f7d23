"""Adapter behaviours the seed does not test, one per test.

Expected values come from the protocol (PROTOCOL-NOTES.md, the seed's
``adapter.rs``), never from running the adapter.  No test sleeps: engines park
on events the test sets, ``asyncio.sleep(0)`` lets scheduled callbacks run and
``adapter.settle()`` waits for the adapter's abort and close tasks.
"""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import json
import threading
from typing import Any

import pytest
from adapter_helpers import (
    REQUEST,
    Act,
    Chunk,
    CoroutineEngine,
    ListEngine,
    Notify,
    ParkedEngine,
    Raise,
    ScriptedEngine,
    Wait,
    WaitCancelled,
    Yield,
    async_test,
    collect,
    data_of,
    ended,
    error_of,
    let_callbacks_run,
    next_item,
    setup_failure,
)
from dynamo_backend_protocol.model import CancelCause, ControlState, Step, guarded
from dynamo_backend_protocol.reference import (
    BackendError,
    Context,
    DisaggregationMode,
    DynamoError,
    EngineAdapter,
    EngineConfig,
    JsonlTraceWriter,
    cancelled,
    error,
    length,
    start_engine,
    stop,
    token,
)

AGG = DisaggregationMode.AGGREGATED
DECODE = DisaggregationMode.DECODE
ENCODE = DisaggregationMode.ENCODE
NOT_DECODE = [m for m in DisaggregationMode if m is not DECODE]
EMPTY: Chunk = {"token_ids": [], "index": 0}
"""A token-less non-terminal chunk, like SGLang's bootstrap handshake."""


async def settled_aborts(adapter: EngineAdapter, engine: ScriptedEngine | ParkedEngine | CoroutineEngine) -> int:
    await let_callbacks_run()
    await adapter.settle()
    return engine.aborts


# --------------------------------------------------------------------------- kill instead of stop


@async_test
async def test_kill_in_aggregated_mode_aborts_once_immediately() -> None:
    """A kill is a cancellation like a stop: aggregated mode aborts at once, and only once."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.kill()
    assert await settled_aborts(adapter, engine) == 1

    engine.release.set()
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_kill_in_decode_mode_defers_abort_until_first_token() -> None:
    """A kill before the first token is deferred in decode mode exactly like a stop:
    the prefill peer's KV transfer must not be orphaned by a kill either."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.kill()
    assert await settled_aborts(adapter, engine) == 0

    engine.release.set()
    assert data_of(await next_item(stream))["token_ids"] == [42]
    assert await settled_aborts(adapter, engine) == 1
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_kill_after_stop_does_not_abort_twice() -> None:
    """A kill that follows a stop is the same cancellation: engine.abort stays at one call."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    context.kill()
    assert await settled_aborts(adapter, engine) == 1
    engine.release.set()
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


@pytest.mark.parametrize("mode", NOT_DECODE, ids=str)
@async_test
async def test_every_mode_but_decode_aborts_immediately(mode: DisaggregationMode) -> None:
    """Prefill and encode workers, like aggregated ones, abort as soon as the stop is seen."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, mode)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 1
    await stream.aclose()


# --------------------------------------------------------------------------- decode deferral


@async_test
async def test_decode_tokenless_chunk_does_not_release_deferred_abort() -> None:
    """A token-less chunk (SGLang's bootstrap handshake) is not first-token: the
    deferred abort waits for the first chunk that carries tokens."""
    release = asyncio.Event()
    engine = ScriptedEngine([EMPTY, Wait(release), token(7), WaitCancelled(), cancelled()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    assert data_of(await next_item(stream))["token_ids"] == []
    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0

    release.set()
    assert data_of(await next_item(stream))["token_ids"] == [7]
    assert await settled_aborts(adapter, engine) == 1
    assert [data_of(i)["finish_reason"] for i in await collect(stream)] == ["cancelled"]
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_decode_tokenless_chunk_before_stop_does_not_count_as_first_token() -> None:
    """A handshake chunk received before the stop still leaves the request before
    first-token, so the stop that follows is deferred."""
    release = asyncio.Event()
    engine = ScriptedEngine([EMPTY, EMPTY, Wait(release), token(8), stop()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    await next_item(stream)
    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0
    release.set()
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_decode_terminal_carrying_first_tokens_fires_deferred_abort_exactly_once() -> None:
    """The same-step tie: a terminal that carries the first tokens while the abort is
    deferred both reaches first-token and ends the stream; first-token wins, so the
    abort fires, exactly once."""
    release = asyncio.Event()
    engine = ScriptedEngine([Wait(release), length().with_tokens([5, 6])])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0
    release.set()
    items = await collect(stream)
    assert [data_of(i)["token_ids"] for i in items] == [[5, 6]]
    assert data_of(items[0])["finish_reason"] == "length"
    assert await settled_aborts(adapter, engine) == 1


@pytest.mark.parametrize(
    "ending",
    [
        [cancelled()],
        [Raise(DynamoError(BackendError.CANCELLED, "cancelled before first token"))],
        [],
    ],
    ids=["tokenless-cancelled-terminal", "typed-error", "end-without-terminal"],
)
@async_test
async def test_decode_stream_ending_before_first_token_drops_deferred_abort(ending: list[Act]) -> None:
    """When a stopped decode request's stream ends before any token (a token-less
    terminal, an error, or just ending), the deferred abort is never made."""
    release = asyncio.Event()
    engine = ScriptedEngine([Wait(release), *ending])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    release.set()
    items = await collect(stream)
    assert len(items) == len(ending)
    assert await settled_aborts(adapter, engine) == 0


@async_test
async def test_decode_drop_with_deferred_abort_does_not_abort_and_runs_engine_finally() -> None:
    """Dropping a stopped decode stream before first-token makes no abort; the
    engine's per-request cleanup (its generator's ``finally``) still runs."""
    never = asyncio.Event()
    engine = ScriptedEngine([EMPTY, Wait(never), token(1)])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    assert engine.record.generators_started == 1
    context.stop_generating()
    await stream.aclose()

    assert await settled_aborts(adapter, engine) == 0
    assert engine.record.generators_finalized == 1


@async_test
async def test_decode_drop_by_garbage_collection_with_deferred_abort_does_not_abort() -> None:
    """A consumer that just forgets a stopped decode stream (no aclose) is a drop too:
    no abort, and the engine's generator is closed so its ``finally`` runs."""
    never = asyncio.Event()
    engine = ScriptedEngine([EMPTY, Wait(never), token(1)])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    context.stop_generating()
    del stream
    gc.collect()

    assert await settled_aborts(adapter, engine) == 0
    assert engine.record.generators_finalized == 1


@async_test
async def test_decode_consumer_cancelled_mid_read_with_deferred_abort_does_not_abort() -> None:
    """A consumer task cancelled while it waits for the next item is a drop: with the
    abort deferred, no abort is made, and the engine generator's ``finally`` runs."""
    never = asyncio.Event()
    engine = ScriptedEngine([Wait(never), token(1)])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    reader = asyncio.ensure_future(next_item(stream))
    await let_callbacks_run()
    assert not reader.done()
    context.stop_generating()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    assert await settled_aborts(adapter, engine) == 0
    assert engine.record.generators_finalized == 1
    assert stream.machine.state.control is ControlState.DONE


@async_test
async def test_decode_side_channel_notify_while_abort_is_deferred_fires_it() -> None:
    """An engine that signals first-token from a side channel while a stopped decode
    request waits for it gets its abort at that moment, before any chunk flows."""
    gate = asyncio.Event()
    release = asyncio.Event()
    engine = ScriptedEngine([Wait(gate), Notify(), Wait(release), cancelled()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    reader = asyncio.ensure_future(next_item(stream))
    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0

    gate.set()
    assert await settled_aborts(adapter, engine) == 1
    assert not reader.done()

    release.set()
    assert data_of(await reader)["finish_reason"] == "cancelled"
    assert await ended(stream)
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_side_channel_notify_during_async_setup_then_stop_aborts_at_once() -> None:
    """A decode engine that notifies first-token while its ``async def generate`` is
    still setting up (after an await) has reached the abortable state: a later
    stop aborts at once."""
    gate = asyncio.Event()
    release = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate), Notify()], script=[Wait(release), stop()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    assert not setting_up.done()
    gate.set()
    stream = await setting_up

    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 1
    release.set()
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_side_channel_notify_outside_decode_does_not_abort_by_itself() -> None:
    """``notify_first_token()`` is a no-op outside decode: without a stop or kill the
    request completes and engine.abort is never called."""
    engine = ScriptedEngine([Notify(), token(1), stop()])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    assert len(await collect(stream)) == 2
    assert await settled_aborts(adapter, engine) == 0


# --------------------------------------------------------------------------- cancellation during setup


@async_test
async def test_stop_during_setup_aborts_once_the_stream_exists_in_aggregated_mode() -> None:
    """A stop that arrives while ``generate`` is still setting up has nothing to abort
    yet; the abort fires as soon as the stream exists (the watch sees the context
    already stopped)."""
    gate = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate)], script=[WaitCancelled(), cancelled()])
    adapter = EngineAdapter(engine, AGG)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0

    gate.set()
    stream = await setting_up
    assert await settled_aborts(adapter, engine) == 1
    assert [data_of(i)["finish_reason"] for i in await collect(stream)] == ["cancelled"]
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_stop_during_setup_is_deferred_in_decode_mode() -> None:
    """A decode request stopped during setup is still before first-token when its stream
    appears, so the abort waits for the first token."""
    gate = asyncio.Event()
    release = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate)], script=[Wait(release), token(3), cancelled()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    context.stop_generating()
    gate.set()
    stream = await setting_up
    assert await settled_aborts(adapter, engine) == 0

    release.set()
    await next_item(stream)
    assert await settled_aborts(adapter, engine) == 1
    await collect(stream)


@async_test
async def test_stop_during_a_setup_that_fails_does_not_abort() -> None:
    """A setup failure leaves no stream and so nothing to abort, even if the request
    was stopped while setting up."""
    gate = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate), Raise(DynamoError(BackendError.CANNOT_CONNECT, "no peer"))])
    adapter = EngineAdapter(engine, AGG)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    context.stop_generating()
    gate.set()
    with pytest.raises(DynamoError) as caught:
        await setting_up
    assert caught.value.error_type() is BackendError.CANNOT_CONNECT
    assert await settled_aborts(adapter, engine) == 0


@async_test
async def test_stop_then_kill_during_setup_records_the_stop_as_the_cancellation() -> None:
    """Stop and kill are observed once, the first one counts (a later kill changes
    nothing): a request stopped and then killed while its stream was being set up
    was cancelled by the stop, and its trace must say so, as it does when the
    same two signals arrive on a live stream."""
    gate = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate)], script=[WaitCancelled(), cancelled()])
    adapter = EngineAdapter(engine, AGG)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    context.stop_generating()
    context.kill()
    gate.set()
    stream = await setting_up
    await collect(stream)

    assert [step.event.name for step in stream.trace if not step.ignored] == ["stop", "setup", "terminal:cancelled"]
    assert stream.machine.state.cancel is CancelCause.STOP
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_signals_during_setup_are_traced_in_the_order_they_happened() -> None:
    """A decode request stopped during setup, whose engine then signals first-token
    before the stream exists, has a trace that shows the stop first: operators
    replay traces to learn what happened, so the order must be the real one."""
    gate = asyncio.Event()
    engine = CoroutineEngine(setup=[Wait(gate), Notify()], script=[WaitCancelled(), cancelled()])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()

    setting_up = asyncio.ensure_future(adapter.generate(REQUEST, context))
    await let_callbacks_run()
    context.stop_generating()
    gate.set()
    stream = await setting_up
    await collect(stream)

    assert [step.event.name for step in stream.trace] == ["stop", "first_token", "setup", "terminal:cancelled"]
    assert await settled_aborts(adapter, engine) == 1


@async_test
async def test_stop_from_another_thread_aborts_once() -> None:
    """The runtime may stop a request from a thread other than the loop's: the
    cancellation still reaches the adapter, which aborts exactly once."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    stopper = threading.Thread(target=context.stop_generating)
    stopper.start()
    stopper.join()
    assert await settled_aborts(adapter, engine) == 1
    engine.release.set()
    await collect(stream)
    assert await settled_aborts(adapter, engine) == 1


def test_stop_on_the_loop_thread_while_the_loop_is_idle_still_aborts() -> None:
    """Code on the loop's thread may stop a request while the loop is not running
    (a synchronous callback, a sync harness between steps).  The stop must neither
    raise into the caller nor be lost: the abort runs once the loop runs again."""
    loop = asyncio.new_event_loop()
    try:
        engine = ParkedEngine()
        adapter = EngineAdapter(engine, AGG)
        context = Context()
        stream = loop.run_until_complete(adapter.generate(REQUEST, context))

        context.stop_generating()

        loop.run_until_complete(let_callbacks_run())
        loop.run_until_complete(adapter.settle())
        assert engine.aborts == 1
        loop.run_until_complete(stream.aclose())
    finally:
        loop.close()


# --------------------------------------------------------------------------- abort edge cases


@async_test
async def test_abort_that_raises_does_not_break_the_stream() -> None:
    """engine.abort is best effort: if it raises, the stream still delivers the
    engine's terminal, the failure is counted, and nothing crashes."""
    engine = CoroutineEngine(
        [token(1), WaitCancelled(), cancelled()], abort_error=RuntimeError("abort blew up")
    )
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    context.stop_generating()
    rest = await collect(stream)
    await adapter.settle()

    assert [data_of(i)["finish_reason"] for i in rest] == ["cancelled"]
    assert engine.aborts == 1
    assert adapter.abort_failures == 1


@async_test
async def test_stop_after_completion_does_not_abort() -> None:
    """Stopping or killing a request that already completed has nothing to abort."""
    engine = ListEngine([token(1), stop()])
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    await collect(stream)

    context.stop_generating()
    context.kill()
    await let_callbacks_run()
    await adapter.settle()
    assert engine.aborts == 0


@async_test
async def test_stop_right_after_the_terminal_was_delivered_does_not_abort() -> None:
    """Once the terminal item is in the consumer's hands the request is over, even if
    the consumer has not asked for the end of the stream yet: a stop then is too late."""
    engine = ScriptedEngine([token(1), stop()])
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    assert data_of(await next_item(stream))["finish_reason"] == "stop"

    context.stop_generating()
    assert await settled_aborts(adapter, engine) == 0
    assert await ended(stream)


@async_test
async def test_silent_drop_mid_stream_never_aborts() -> None:
    """A consumer that goes away without stop or kill never triggers engine.abort; the
    engine's generator is closed, so its own cleanup runs."""
    never = asyncio.Event()
    engine = ScriptedEngine([token(1), Wait(never), token(2)])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    await next_item(stream)
    await stream.aclose()
    assert await settled_aborts(adapter, engine) == 0
    assert engine.record.generators_finalized == 1


@async_test
async def test_an_exception_the_consumer_throws_in_at_a_token_comes_back_to_the_consumer() -> None:
    """A consumer that throws into the stream (``athrow``) while it holds a token gets its
    own exception back and the request ends as interrupted, as a drop would end it.  It is
    not the engine's fault, so it never becomes an error item blaming an engine item, and
    the engine's generator is closed.  The throw lands at the fourth token: by then the
    adapter forwards tokens by its fast token step."""
    engine = ScriptedEngine([token(1), token(2), token(3), token(4), token(5), length()])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = stream.__aiter__()
    for _ in range(4):
        await anext(items)
    with pytest.raises(RuntimeError, match="the consumer's own"):
        await items.athrow(RuntimeError("the consumer's own"))  # type: ignore[attr-defined]
    assert names(stream.trace) == ["setup", *["token_chunk"] * 4, "drop"]
    assert stream.machine.control is ControlState.DONE
    assert engine.record.generators_finalized == 1
    assert await settled_aborts(adapter, engine) == 0


@async_test
async def test_engine_without_abort_method_can_be_stopped() -> None:
    """``abort`` is optional: stopping a request on a duck-typed engine without it
    neither crashes nor counts as an abort failure."""

    class NoAbortEngine:
        async def start(self, worker_id: int) -> EngineConfig:
            return EngineConfig(model="no-abort")

        async def generate(self, request: dict[str, Any], context: Context) -> Any:
            yield token(1)
            await context.async_killed_or_stopped()
            yield cancelled()

        async def cleanup(self) -> None:
            return None

    adapter = EngineAdapter(NoAbortEngine(), AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    context.stop_generating()
    assert [data_of(i)["finish_reason"] for i in await collect(stream)] == ["cancelled"]
    await adapter.settle()
    assert adapter.abort_failures == 0


# --------------------------------------------------------------------------- errors


@async_test
async def test_async_generator_failing_before_first_item_yields_one_error_item() -> None:
    """An async-generator engine that fails before its first item has already handed
    over a stream, so the failure arrives as exactly one error item (not a setup
    error), and no abort is made."""
    engine = ScriptedEngine([Raise(DynamoError(BackendError.ENGINE_SHUTDOWN, "engine gone"))])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())

    items = await collect(stream)
    assert len(items) == 1
    err = error_of(items[0])
    assert err.error_type() is BackendError.ENGINE_SHUTDOWN
    assert err.message == "engine gone"
    assert await settled_aborts(adapter, engine) == 0


@async_test
async def test_plain_exception_mid_stream_becomes_unknown_error_naming_it() -> None:
    """A plain Python exception mid-stream still reaches the client as a typed error:
    kind Unknown, with the exception's type and message in the text."""
    engine = ScriptedEngine([token(1), Raise(ValueError("boom at token 2")), token(3)])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())

    items = await collect(stream)
    assert len(items) == 2
    assert data_of(items[0])["token_ids"] == [1]
    err = error_of(items[1])
    assert err.error_type() is BackendError.UNKNOWN
    assert "ValueError" in err.message
    assert "boom at token 2" in err.message


@async_test
async def test_plain_exception_during_setup_is_raised_as_unknown_dynamo_error() -> None:
    """A plain exception from an ``async def generate`` before the stream exists is
    raised by adapter.generate as a typed Unknown error naming the exception."""
    adapter = EngineAdapter(setup_failure(KeyError("max_tokens")), AGG)
    with pytest.raises(DynamoError) as caught:
        await adapter.generate(REQUEST, Context())
    assert caught.value.error_type() is BackendError.UNKNOWN
    assert "KeyError" in caught.value.message
    assert "max_tokens" in caught.value.message


@pytest.mark.parametrize("kind", list(BackendError), ids=lambda k: k.value)
@async_test
async def test_typed_mid_stream_error_keeps_its_kind(kind: BackendError) -> None:
    """Every BackendError kind survives the adapter unchanged, message included."""
    engine = ScriptedEngine([token(1), Raise(DynamoError(kind, f"{kind.value} happened"))])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)
    err = error_of(items[-1])
    assert err.error_type() is kind
    assert err.message == f"{kind.value} happened"


@async_test
async def test_typed_error_yielded_as_an_item_ends_the_stream() -> None:
    """An engine may yield a typed error instead of raising it (the Rust ``Err`` item):
    it is forwarded as an error item, and the engine is not read any further."""
    engine = ScriptedEngine(
        [token(1), Yield(DynamoError(BackendError.STREAM_INCOMPLETE, "lost the KV")), token(2), stop()]
    )
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)

    assert len(items) == 2
    assert error_of(items[1]) == DynamoError(BackendError.STREAM_INCOMPLETE, "lost the KV")
    await adapter.settle()
    assert engine.record.generators_finalized == 1


@async_test
async def test_nothing_is_read_after_a_terminal_chunk() -> None:
    """After the terminal chunk the adapter stops reading the engine: a chunk the
    engine would emit afterwards never reaches the client, and the engine's
    generator is closed."""
    engine = ScriptedEngine([token(1), stop(), token(2)])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)

    assert [data_of(i)["token_ids"] for i in items] == [[1], []]
    await adapter.settle()
    assert engine.record.generators_finalized == 1


@async_test
async def test_string_form_error_terminal_is_forwarded_as_data() -> None:
    """The string form of a mid-stream failure (a chunk with ``finish_reason: error``)
    is a terminal chunk like any other: forwarded as data, and the stream ends."""
    engine = ScriptedEngine([token(1), error("out of memory"), token(2)])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)
    assert len(items) == 2
    assert data_of(items[1])["finish_reason"] == "error: out of memory"


@async_test
async def test_stream_ending_without_terminal_just_ends() -> None:
    """An engine stream that ends without a terminal ends the response stream; the
    adapter invents no item for it and calls no abort."""
    engine = ScriptedEngine([token(1), token(2)])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i)["token_ids"] for i in items] == [[1], [2]]
    assert await settled_aborts(adapter, engine) == 0


# --------------------------------------------------------------------------- chunk validation

MALFORMED: list[tuple[str, object, str | None]] = [
    ("not-a-dict", "token 7", None),
    ("list-instead-of-dict", [7], None),
    ("missing-token_ids", {"index": 0}, "token_ids"),
    ("negative-token-id", {"token_ids": [1, -1], "index": 0}, "token_ids"),
    ("str-token-id", {"token_ids": [1, "2"], "index": 0}, "token_ids"),
    ("float-token-id", {"token_ids": [1.0], "index": 0}, "token_ids"),
    ("token_ids-not-a-list", {"token_ids": 7, "index": 0}, "token_ids"),
    ("str-index", {"token_ids": [1], "index": "0"}, "index"),
    ("float-index", {"token_ids": [1], "index": 0.0}, "index"),
    ("unknown-finish_reason", {"token_ids": [], "index": 0, "finish_reason": "done"}, "finish_reason"),
    # Dynamo spells its reasons exactly: case matters, and a message needs "error: " with the space.
    ("capitalised-finish_reason", {"token_ids": [], "index": 0, "finish_reason": "Stop"}, "finish_reason"),
    ("error-message-without-space", {"token_ids": [], "index": 0, "finish_reason": "error:boom"}, "finish_reason"),
    ("finish_reason-not-a-str", {"token_ids": [], "index": 0, "finish_reason": 1}, "finish_reason"),
]

DYNAMO_FINISH_REASONS = ["eos", "stop", "length", "cancelled", "abort", "content_filter", "error", "error: boom"]


@pytest.mark.parametrize("reason", DYNAMO_FINISH_REASONS)
@async_test
async def test_every_dynamo_finish_reason_is_forwarded_as_a_terminal_data_item(reason: str) -> None:
    """Dynamo's FinishReason accepts eos, stop, length, cancelled (alias abort), content_filter,
    error and ``error: <message>``: validation must let each through unchanged, as the terminal
    that ends the stream (nothing after it is read)."""
    terminal: Chunk = {"token_ids": [], "index": 0, "finish_reason": reason}
    engine = ScriptedEngine([token(1), terminal, token(2)])
    stream = await EngineAdapter(engine, AGG).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [token(1), terminal]


@async_test
async def test_abort_terminal_after_a_stop_is_the_cancelled_terminal() -> None:
    """A vLLM-style engine ends with ``abort`` after a stop: the model reads it as the cancelled
    terminal (event terminal:cancelled), so the request ends normally after its single abort."""
    engine = ScriptedEngine([token(1), WaitCancelled(), {"token_ids": [], "index": 0, "finish_reason": "abort"}])
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    first = await next_item(stream)
    context.stop_generating()
    rest = await collect(stream)
    assert data_of(first)["token_ids"] == [1]
    assert [data_of(i)["finish_reason"] for i in rest] == ["abort"]
    assert await settled_aborts(adapter, engine) == 1
    assert [step.event.name for step in stream.trace][-1] == "terminal:cancelled"


@pytest.mark.parametrize(("bad", "field"), [(b, f) for _, b, f in MALFORMED], ids=[n for n, _, _ in MALFORMED])
@async_test
async def test_malformed_chunk_becomes_one_error_item_naming_field_and_position(bad: object, field: str | None) -> None:
    """Validation is on by default: the chunks before a malformed one are forwarded,
    then ONE error item names the bad field and the chunk's 1-based position, and
    the stream ends (the engine is not read further and its generator is closed)."""
    engine = ScriptedEngine([token(1), EMPTY, Yield(bad), token(4), stop()])
    adapter = EngineAdapter(engine, AGG)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)

    assert [data_of(i)["token_ids"] for i in items[:2]] == [[1], []]
    assert len(items) == 3
    err = error_of(items[2])
    assert "#3" in err.message, err.message
    if field is not None:
        assert field in err.message, err.message
    await adapter.settle()
    assert engine.aborts == 0
    assert engine.record.generators_finalized == 1


@pytest.mark.parametrize("reason", ["stop", "length", "error"])
@pytest.mark.parametrize("encoder_result", [None, "embeddings", [1, 2]], ids=["missing", "str", "list"])
@async_test
async def test_encode_terminal_without_object_encoder_result_is_an_error(
    reason: str, encoder_result: object
) -> None:
    """In encode mode a non-cancelled terminal must hand off an ``encoder_result``
    object; without one the client gets an error item naming that field."""
    bad: Chunk = {"token_ids": [], "index": 0, "finish_reason": reason}
    if encoder_result is not None:
        bad["encoder_result"] = encoder_result
    engine = ScriptedEngine([token(1), bad])
    adapter = EngineAdapter(engine, ENCODE)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)

    assert len(items) == 2
    data_of(items[0])
    err = error_of(items[1])
    assert "encoder_result" in err.message
    assert "#2" in err.message


@async_test
async def test_encode_terminal_with_object_encoder_result_is_forwarded() -> None:
    """An encode-mode terminal that carries an ``encoder_result`` object is valid."""
    terminal = stop().with_field("encoder_result", {"embedding_handle": "h-1"})
    engine = ScriptedEngine([terminal])
    stream = await EngineAdapter(engine, ENCODE).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [terminal]


@async_test
async def test_encode_cancelled_terminal_needs_no_encoder_result() -> None:
    """A cancelled encode request has nothing to hand off: its terminal is exempt."""
    engine = ScriptedEngine([cancelled()])
    stream = await EngineAdapter(engine, ENCODE).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i)["finish_reason"] for i in items] == ["cancelled"]


@pytest.mark.parametrize("mode", [m for m in DisaggregationMode if m is not ENCODE], ids=str)
@async_test
async def test_only_encode_mode_checks_encoder_result(mode: DisaggregationMode) -> None:
    """Other modes never look at ``encoder_result``: a plain ``stop`` terminal is valid."""
    engine = ScriptedEngine([stop()])
    stream = await EngineAdapter(engine, mode).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i)["finish_reason"] for i in items] == ["stop"]


@async_test
async def test_missing_index_is_fine() -> None:
    """A chunk without ``index`` means choice 0 (Dynamo's own sample engine omits it)."""
    engine = ScriptedEngine([{"token_ids": [4]}, {"token_ids": [], "finish_reason": "stop"}])
    stream = await EngineAdapter(engine, AGG).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [{"token_ids": [4]}, {"token_ids": [], "finish_reason": "stop"}]


@async_test
async def test_malformed_chunk_with_tokens_is_not_first_token_for_a_deferred_abort() -> None:
    """A malformed chunk is an error, not a token: with a decode abort deferred, it
    ends the stream and the deferred abort is dropped."""
    release = asyncio.Event()
    engine = ScriptedEngine([Wait(release), {"token_ids": [5, -5], "index": 0}, token(6)])
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    context.stop_generating()
    release.set()
    items = await collect(stream)
    assert len(items) == 1
    error_of(items[0])
    assert await settled_aborts(adapter, engine) == 0


@async_test
async def test_malformed_chunk_after_an_aggregated_stop_keeps_the_single_abort() -> None:
    """In aggregated mode the abort already fired on the stop; a malformed chunk that
    then ends the stream adds no second abort."""
    release = asyncio.Event()
    engine = ScriptedEngine([token(1), Wait(release), {"index": 0}])
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)

    await next_item(stream)
    context.stop_generating()
    release.set()
    items = await collect(stream)
    assert len(items) == 1
    error_of(items[0])
    assert await settled_aborts(adapter, engine) == 1


LENIENT: list[tuple[str, Chunk]] = [
    ("missing-token_ids", {"index": 0}),
    ("negative-token-id", {"token_ids": [1, -1], "index": 0}),
    ("str-token-id", {"token_ids": [1, "2"], "index": 0}),
    ("str-index", {"token_ids": [1], "index": "0"}),
]


@pytest.mark.parametrize("odd", [c for _, c in LENIENT], ids=[n for n, _ in LENIENT])
@async_test
async def test_validation_off_forwards_ill_formed_chunks_as_is(odd: Chunk) -> None:
    """With ``validate=False`` the adapter forwards ill-formed non-terminal chunks
    untouched and keeps reading: the author opted out of the checks."""
    engine = ScriptedEngine([odd, token(2), stop()])
    stream = await EngineAdapter(engine, AGG, validate=False).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [odd, token(2), stop()]


@async_test
async def test_validation_off_unknown_finish_reason_is_still_a_terminal() -> None:
    """With ``validate=False`` a chunk whose ``finish_reason`` is unknown is forwarded,
    and, being a terminal (it has a finish_reason), it still ends the stream."""
    odd: Chunk = {"token_ids": [3], "index": 0, "finish_reason": "done"}
    engine = ScriptedEngine([token(1), odd, token(2)])
    adapter = EngineAdapter(engine, AGG, validate=False)
    stream = await adapter.generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [token(1), odd]
    await adapter.settle()
    assert engine.record.generators_finalized == 1


@async_test
async def test_validation_off_encode_terminal_without_encoder_result_is_forwarded() -> None:
    """With ``validate=False`` the encode-mode ``encoder_result`` check is off too."""
    engine = ScriptedEngine([stop()])
    stream = await EngineAdapter(engine, ENCODE, validate=False).generate(REQUEST, Context())
    items = await collect(stream)
    assert [data_of(i) for i in items] == [stop()]


# --------------------------------------------------------------------------- engine shapes


@async_test
async def test_start_engine_calls_legacy_start_without_arguments() -> None:
    """Engines written for older Dynamo define ``start()`` with no argument;
    ``start_engine`` still starts them and returns their config."""

    class LegacyEngine:
        def __init__(self) -> None:
            self.starts = 0

        async def start(self) -> EngineConfig:
            self.starts += 1
            return EngineConfig(model="legacy-model")

        def generate(self, request: dict[str, Any], context: Context) -> Any:
            return ScriptedEngine([stop()]).generate(request, context)

        async def cleanup(self) -> None:
            return None

    engine = LegacyEngine()
    config = await start_engine(engine, worker_id=7)
    assert engine.starts == 1
    assert config.model == "legacy-model"


@async_test
async def test_start_engine_passes_worker_id_to_current_engines() -> None:
    """Current engines receive the worker id in ``start(worker_id)``."""

    class CurrentEngine:
        def __init__(self) -> None:
            self.worker_ids: list[int] = []

        async def start(self, worker_id: int) -> EngineConfig:
            self.worker_ids.append(worker_id)
            return EngineConfig(model="current-model")

        async def cleanup(self) -> None:
            return None

    engine = CurrentEngine()
    config = await start_engine(engine, worker_id=7)
    assert engine.worker_ids == [7]
    assert config.model == "current-model"


@async_test
async def test_duck_typed_engine_is_adapted_like_a_subclass() -> None:
    """An engine that does not subclass LLMEngine but has the methods works: its
    chunks are forwarded, it receives the request and context, and a stop reaches
    its ``abort``."""

    class DuckEngine:
        def __init__(self) -> None:
            self.requests: list[dict[str, Any]] = []
            self.aborted: list[Context] = []

        async def start(self, worker_id: int) -> EngineConfig:
            return EngineConfig(model="duck")

        async def generate(self, request: dict[str, Any], context: Context) -> Any:
            self.requests.append(request)
            yield token(request["token_ids"][0])
            await context.async_killed_or_stopped()
            yield cancelled()

        async def abort(self, context: Context) -> None:
            self.aborted.append(context)

        async def cleanup(self) -> None:
            return None

    engine = DuckEngine()
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    assert data_of(await next_item(stream))["token_ids"] == [REQUEST["token_ids"][0]]
    context.stop_generating()
    assert [data_of(i)["finish_reason"] for i in await collect(stream)] == ["cancelled"]
    await adapter.settle()
    assert engine.requests == [REQUEST]
    assert engine.aborted == [context]


# --------------------------------------------------------------------------- traces


def names(steps: list[Step]) -> list[str]:
    return [step.event.name for step in steps]


@async_test
async def test_stream_trace_is_the_ordered_list_of_model_steps() -> None:
    """``stream.trace`` records every event the request went through, in order, with
    the state it led to and the actions performed: setup, a token, the stop (which
    aborts at once in aggregated mode), then the cancelled terminal."""
    engine = ScriptedEngine([token(1), WaitCancelled(), cancelled()])
    adapter = EngineAdapter(engine, AGG)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    context.stop_generating()
    await collect(stream)

    trace = stream.trace
    assert all(isinstance(step, guarded.Step) for step in trace)
    assert names(trace) == ["setup", "token_chunk", "stop", "terminal:cancelled"]
    assert [step.after.control for step in trace] == [
        ControlState.STREAMING,
        ControlState.STREAMING,
        ControlState.ABORTED,
        ControlState.DONE,
    ]
    assert [[a.value for a in step.actions] for step in trace] == [
        [],
        ["forward_data"],
        ["call_abort"],
        ["forward_data", "stop_reading", "release_watch"],
    ]
    for before, after in itertools.pairwise(trace):
        assert after.before == before.after, "each step starts where the previous one ended"


@async_test
async def test_decode_trace_shows_the_deferral_and_its_release() -> None:
    """In decode mode the trace shows the stop parking the request in CancelPending
    and the first token both aborting and forwarding."""
    engine = ParkedEngine()
    adapter = EngineAdapter(engine, DECODE)
    context = Context()
    stream = await adapter.generate(REQUEST, context)
    context.stop_generating()
    engine.release.set()
    await collect(stream)

    trace = stream.trace
    assert names(trace) == ["setup", "stop", "token_chunk", "terminal:length"]
    assert [step.after.control for step in trace] == [
        ControlState.STREAMING,
        ControlState.CANCEL_PENDING,
        ControlState.ABORTED,
        ControlState.DONE,
    ]
    assert [a.value for a in trace[2].actions] == ["call_abort", "forward_data"]


@async_test
async def test_trace_sink_receives_each_finished_request_once() -> None:
    """A trace sink is called once per request, when it is over, with its id and steps."""
    received: list[tuple[str, list[str]]] = []

    def sink(request: str, steps: Any) -> None:
        received.append((request, names(list(steps))))

    adapter = EngineAdapter(ScriptedEngine([token(1), stop()]), AGG, trace_sink=sink)
    context = Context("req-1")
    stream = await adapter.generate(REQUEST, context)
    await collect(stream)
    context.stop_generating()
    await adapter.settle()
    assert received == [("req-1", ["setup", "token_chunk", "terminal:stop"])]


@async_test
async def test_trace_sink_receives_a_failed_setup() -> None:
    """A request whose setup failed is traced too: one setup_failed step that returns the error."""
    received: list[list[Step]] = []
    adapter = EngineAdapter(
        setup_failure(DynamoError(BackendError.UNKNOWN, "init failed")),
        AGG,
        trace_sink=lambda request, steps: received.append(list(steps)),
    )
    with pytest.raises(DynamoError):
        await adapter.generate(REQUEST, Context())
    assert len(received) == 1
    assert names(received[0]) == ["setup_failed"]
    assert [a.value for a in received[0][0].actions] == ["return_setup_error"]
    assert received[0][0].after.control is ControlState.DONE


@async_test
async def test_jsonl_trace_writer_in_steps_format_writes_one_json_object_per_event() -> None:
    """JsonlTraceWriter in the steps format writes one JSON object per line and
    per event, each naming the request, the mode, the event, the resulting state and
    the actions."""
    out = io.StringIO()
    adapter = EngineAdapter(ParkedEngine(), DECODE, trace_sink=JsonlTraceWriter(out, format="steps"))
    context = Context("req-42")
    stream = await adapter.generate(REQUEST, context)
    context.stop_generating()
    assert isinstance(adapter.engine, ParkedEngine)
    adapter.engine.release.set()
    await collect(stream)

    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(isinstance(r, dict) for r in records)
    assert all({"request", "mode", "event", "state", "actions"} <= r.keys() for r in records)
    assert {r["request"] for r in records} == {"req-42"}
    assert {r["mode"] for r in records} == {"decode"}
    assert [r["event"] for r in records] == ["setup", "stop", "token_chunk", "terminal:length"]
    assert [r["state"] for r in records] == ["Streaming", "CancelPending", "Aborted", "Done"]
    assert [r["actions"] for r in records] == [
        [],
        [],
        ["call_abort", "forward_data"],
        ["forward_data", "stop_reading", "release_watch"],
    ]
