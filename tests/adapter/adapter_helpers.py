"""Scripted and mock engines shared by the reference-adapter tests (import explicitly).

Nothing here sleeps for a real duration: engines park on ``asyncio.Event``s the
test sets, or on the request context, so every test is deterministic.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from dynamo_backend_protocol.reference import (
    Annotated,
    Context,
    DynamoError,
    EngineConfig,
    LLMEngine,
    ResponseStream,
    length,
    token,
    usage,
)

P = ParamSpec("P")
Chunk = dict[str, Any]
REQUEST: dict[str, Any] = {"model": "mock", "token_ids": [1, 2, 3]}


def async_test(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test on a fresh event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def collect(stream: ResponseStream) -> list[Annotated]:
    """Read a response stream to its end."""
    return [item async for item in stream]


async def next_item(stream: ResponseStream) -> Annotated:
    """Read exactly one item; fails the test if the stream has ended."""
    item: Annotated = await anext(stream)
    return item


async def ended(stream: ResponseStream) -> bool:
    """Whether the next read reports the end of the stream (reads one item otherwise)."""
    try:
        await anext(stream)
    except StopAsyncIteration:
        return True
    return False


async def let_callbacks_run(rounds: int = 3) -> None:
    """Give already-scheduled callbacks and tasks a few loop iterations (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def data_of(item: Annotated) -> Chunk:
    assert item.data is not None, f"expected a data item, got {item!r}"
    assert item.error is None
    return item.data


def error_of(item: Annotated) -> DynamoError:
    assert item.error is not None, f"expected an error item, got {item!r}"
    assert item.data is None
    return item.error


# --------------------------------------------------------------------------- engine bookkeeping


@dataclass
class Record:
    """What an engine observed: abort calls and the life of its generators."""

    aborts: int = 0
    abort_contexts: list[Context] = field(default_factory=list)
    generators_started: int = 0
    generators_finalized: int = 0


class RecordingEngine(LLMEngine):
    """Base for the mock engines: counts aborts and generator starts/finallys."""

    def __init__(self) -> None:
        self.record = Record()

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model="mock")

    async def abort(self, context: Context) -> None:
        self.record.aborts += 1
        self.record.abort_contexts.append(context)

    async def cleanup(self) -> None:
        return None

    @property
    def aborts(self) -> int:
        return self.record.aborts


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class Raise:
    """Script step: raise this exception from the engine's stream."""

    error: BaseException


@dataclass(frozen=True)
class Wait:
    """Script step: park until the test sets this event."""

    event: asyncio.Event


@dataclass(frozen=True)
class WaitCancelled:
    """Script step: park until the request is stopped or killed."""


@dataclass(frozen=True)
class Notify:
    """Script step: signal first-token through the context's side channel."""


@dataclass(frozen=True)
class Yield:
    """Script step: yield this object as is (for items that are not chunk dicts)."""

    item: object


Act = Chunk | Raise | Wait | WaitCancelled | Notify | Yield


async def play(script: Sequence[Act], context: Context, record: Record) -> AsyncIterator[Any]:
    """The engine stream that performs ``script`` step by step."""
    record.generators_started += 1
    try:
        for act in script:
            if isinstance(act, Raise):
                raise act.error
            if isinstance(act, Wait):
                await act.event.wait()
            elif isinstance(act, WaitCancelled):
                await context.async_killed_or_stopped()
            elif isinstance(act, Notify):
                context.notify_first_token()
            elif isinstance(act, Yield):
                yield act.item
            else:
                yield act
    finally:
        record.generators_finalized += 1


class ScriptedEngine(RecordingEngine):
    """An async-generator engine that plays a fixed script for every request."""

    def __init__(self, script: Sequence[Act]) -> None:
        super().__init__()
        self.script = list(script)

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        return play(self.script, context, self.record)


class ListEngine(RecordingEngine):
    """The seed's ``MockEngine``: yields canned chunks, stopping early once the request is stopped."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        super().__init__()
        self.chunks = list(chunks)

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Chunk]:
        self.record.generators_started += 1
        try:
            for chunk in self.chunks:
                await asyncio.sleep(0)  # a scheduling point between chunks, no real time
                if context.is_stopped():
                    break
                yield chunk
        finally:
            self.record.generators_finalized += 1


class CoroutineEngine:
    """A duck-typed engine whose ``generate`` is an ``async def`` returning the stream.

    Before returning it runs ``setup`` (which may raise, signal, or park), so
    it can fail before any stream exists, like the seed's ``setup_err``.
    """

    def __init__(
        self,
        script: Sequence[Act] = (),
        *,
        setup: Sequence[Act] = (),
        abort_error: BaseException | None = None,
    ) -> None:
        self.script = list(script)
        self.setup = list(setup)
        self.abort_error = abort_error
        self.record = Record()

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model="mock")

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        for act in self.setup:
            if isinstance(act, Raise):
                raise act.error
            if isinstance(act, Wait):
                await act.event.wait()
            elif isinstance(act, WaitCancelled):
                await context.async_killed_or_stopped()
            elif isinstance(act, Notify):
                context.notify_first_token()
            else:
                raise AssertionError(f"setup cannot yield {act!r}")
        return play(self.script, context, self.record)

    async def abort(self, context: Context) -> None:
        self.record.aborts += 1
        self.record.abort_contexts.append(context)
        if self.abort_error is not None:
            raise self.abort_error

    async def cleanup(self) -> None:
        return None

    @property
    def aborts(self) -> int:
        return self.record.aborts


def setup_failure(error: BaseException) -> CoroutineEngine:
    """An engine whose ``generate`` fails before returning a stream."""
    return CoroutineEngine(setup=[Raise(error)])


class ParkedEngine(RecordingEngine):
    """The seed's ``ParkedEngine``: parks until released, then a token and a length terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        return play([Wait(self.release), token(42), length().with_usage(usage(1, 1))], context, self.record)
