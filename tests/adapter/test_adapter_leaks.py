"""Ten thousand requests, ended by every path, leave nothing behind.

A serving process runs the adapter for days; anything a request leaves behind
(a task, a listener on its context, an engine generator whose ``finally`` never
ran) accumulates until the worker falls over.  After the requests below and
``adapter.settle()``, the loop's tasks are the ones it started with, no context
has a listener, every engine generator that started has run its ``finally``, and
engine.abort ran exactly for the paths that cancel a request that reached the
abortable state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapter_helpers import (
    REQUEST,
    Act,
    Chunk,
    CoroutineEngine,
    Raise,
    Wait,
    WaitCancelled,
    async_test,
    collect,
    data_of,
    next_item,
)
from dynamo_backend_protocol.reference import (
    BackendError,
    Context,
    DisaggregationMode,
    DynamoError,
    EngineAdapter,
    ResponseStream,
    cancelled,
    stop,
    token,
)

REQUESTS = 10_000
EMPTY: Chunk = {"token_ids": [], "index": 0}
Driver = Callable[[EngineAdapter, Context], Awaitable[None]]


@dataclass
class Path:
    """One way for a request to end, with the engine and adapter that serve it."""

    name: str
    engine: CoroutineEngine
    adapter: EngineAdapter
    drive: Driver
    aborts_per_request: int
    runs: int = 0


async def clean_completion(adapter: EngineAdapter, context: Context) -> None:
    items = await collect(await adapter.generate(REQUEST, context))
    assert data_of(items[-1])["finish_reason"] == "stop"


async def stopped(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    context.stop_generating()
    assert data_of((await collect(stream))[-1])["finish_reason"] == "cancelled"


async def killed(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    context.kill()
    assert data_of((await collect(stream))[-1])["finish_reason"] == "cancelled"


async def dropped_before_reading(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await stream.aclose()


async def dropped_mid_stream(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)
    await stream.aclose()


async def forgotten_mid_stream(adapter: EngineAdapter, context: Context) -> None:
    """The consumer reads an item and just lets the stream go (no aclose)."""
    stream: ResponseStream | None = await adapter.generate(REQUEST, context)
    assert stream is not None
    await next_item(stream)
    stream = None


async def cancelled_mid_read(adapter: EngineAdapter, context: Context) -> None:
    """The consumer's task is cancelled while it waits for the next item."""
    stream = await adapter.generate(REQUEST, context)
    reader = asyncio.ensure_future(next_item(stream))
    await asyncio.sleep(0)
    reader.cancel()
    try:
        await reader
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the read was not cancelled")


async def setup_fails(adapter: EngineAdapter, context: Context) -> None:
    try:
        await adapter.generate(REQUEST, context)
    except DynamoError:
        return
    raise AssertionError("setup did not fail")


async def ends_without_terminal(adapter: EngineAdapter, context: Context) -> None:
    items = await collect(await adapter.generate(REQUEST, context))
    assert [data_of(i)["token_ids"] for i in items] == [[1]]


async def error_mid_stream(adapter: EngineAdapter, context: Context) -> None:
    items = await collect(await adapter.generate(REQUEST, context))
    assert items[-1].is_error()


async def decode_deferred_then_dropped(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await next_item(stream)  # a token-less handshake chunk: not first-token
    context.stop_generating()
    await stream.aclose()


async def decode_deferred_then_released(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    context.stop_generating()
    items = await collect(stream)
    assert [data_of(i)["token_ids"] for i in items] == [[1], []]


def paths(never: asyncio.Event) -> list[Path]:
    agg, decode = DisaggregationMode.AGGREGATED, DisaggregationMode.DECODE
    failure = DynamoError(BackendError.ENGINE_SHUTDOWN, "shutting down")
    parked: list[Act] = [token(1), Wait(never), token(2)]
    specs: list[tuple[str, DisaggregationMode, CoroutineEngine, Driver, int]] = [
        ("clean completion", agg, CoroutineEngine([token(1), stop()]), clean_completion, 0),
        ("stop", agg, CoroutineEngine([token(1), WaitCancelled(), cancelled()]), stopped, 1),
        ("kill", agg, CoroutineEngine([token(1), WaitCancelled(), cancelled()]), killed, 1),
        ("drop before reading", agg, CoroutineEngine(parked), dropped_before_reading, 0),
        ("drop mid-stream", agg, CoroutineEngine(parked), dropped_mid_stream, 0),
        ("forgotten mid-stream", agg, CoroutineEngine(parked), forgotten_mid_stream, 0),
        ("cancelled mid-read", agg, CoroutineEngine([Wait(never)]), cancelled_mid_read, 0),
        ("setup failure", agg, CoroutineEngine(setup=[Raise(failure)]), setup_fails, 0),
        ("ends without terminal", agg, CoroutineEngine([token(1)]), ends_without_terminal, 0),
        ("mid-stream error", agg, CoroutineEngine([token(1), Raise(failure)]), error_mid_stream, 0),
        ("decode deferred, dropped", decode, CoroutineEngine([EMPTY, Wait(never)]), decode_deferred_then_dropped, 0),
        (
            "decode deferred, released",
            decode,
            CoroutineEngine([token(1), WaitCancelled(), cancelled()]),
            decode_deferred_then_released,
            1,
        ),
    ]
    return [Path(name, engine, EngineAdapter(engine, mode), drive, n) for name, mode, engine, drive, n in specs]


@async_test
async def test_ten_thousand_requests_leave_no_tasks_listeners_or_open_generators() -> None:
    """Whatever way a request ends, the adapter leaves no task running, no listener on
    the request's context, and no engine generator without its ``finally`` having run."""
    baseline = asyncio.all_tasks()
    never = asyncio.Event()
    routes = paths(never)
    contexts: list[Context] = []

    async def serve(path: Path) -> None:
        context = Context()
        contexts.append(context)
        await path.drive(path.adapter, context)
        path.runs += 1

    for n in range(REQUESTS):
        await serve(routes[n % len(routes)])
    for path in routes:
        await path.adapter.settle()
    assert asyncio.all_tasks() == baseline

    # Settling must be enough right after each path, not only after others ran.
    for path in routes:
        await serve(path)
        await path.adapter.settle()
        assert asyncio.all_tasks() == baseline, path.name

    # No public way to ask a Context whether anyone still listens: read its list.
    listening = [c.id() for c in contexts if c.has_listeners()]
    assert listening == [], f"{len(listening)} contexts still have listeners"
    for path in routes:
        record = path.engine.record
        assert record.generators_finalized == record.generators_started, path.name
        assert path.engine.aborts == path.runs * path.aborts_per_request, path.name
        assert path.adapter.abort_failures == 0
        assert path.adapter.background_tasks == 0
