"""The engines the bench drives, and the ways of draining them it compares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.context import Context


class TrivialEngine:
    """Yields ``count`` one-token chunks without ever suspending; like any real
    engine it builds a new chunk per token."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        for token_id in range(self.count - 1):
            yield {"token_ids": [token_id], "index": 0}
        yield {"token_ids": [0], "index": 0, "finish_reason": "length"}

    async def cleanup(self) -> None:
        return None


class YieldingEngine(TrivialEngine):
    """Gives the event loop a turn before every token, as real engines do."""

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        for token_id in range(self.count - 1):
            await asyncio.sleep(0)
            yield {"token_ids": [token_id], "index": 0}
        yield {"token_ids": [0], "index": 0, "finish_reason": "length"}


async def drain_bare(engine: TrivialEngine) -> None:
    async for _ in engine.generate({}, Context()):
        pass


async def drain_adapter(adapter: EngineAdapter) -> None:
    stream = await adapter.generate({}, Context())
    async for _ in stream:
        pass


FLOOR_DESCRIPTION = (
    "a stream object the consumer holds, one async-generator layer over the engine, "
    "one Annotated allocated per chunk, and the end-of-stream check on finish_reason; "
    "no validation, no model"
)


class FloorStream:
    """The least a correct adapter's response stream can cost in Python.

    It pays what any wrapper must: an object the consumer holds (the handle a
    drop is heard through), a generator layer between consumer and engine, the
    item it forwards (an :class:`Annotated`), and a look at ``finish_reason`` to
    know the stream is over.  It validates nothing and consults no model.
    """

    __slots__ = ("_items",)

    def __init__(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        self._items = _forward(chunks)

    def __aiter__(self) -> AsyncIterator[Annotated]:
        return self._items


async def _forward(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Annotated]:
    async for chunk in chunks:
        yield Annotated(chunk)
        if chunk.get("finish_reason") is not None:
            return


async def drain_floor(engine: TrivialEngine) -> None:
    async for _ in FloorStream(engine.generate({}, Context())):
        pass
