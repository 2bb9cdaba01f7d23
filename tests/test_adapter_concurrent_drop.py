"""Dropping a stream from another task while a read is pending (a runtime's disconnect handler)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from dynamo_backend_protocol.model import ControlState, StreamEnd
from dynamo_backend_protocol.reference import Context, EngineAdapter, length, token


class GatedEngine:
    """Yields one token, then waits for the test before yielding more."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.finally_ran = 0
        self.aborts = 0

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        try:
            yield token(1)
            await self.gate.wait()
            yield token(2)
            yield length()
        finally:
            self.finally_ran += 1

    async def abort(self, context: Context) -> None:
        self.aborts += 1

    async def cleanup(self) -> None:
        return None


def test_aclose_while_another_task_awaits_the_next_item_ends_that_read_as_a_drop() -> None:
    """A disconnect handler may drop the stream while the request task is still
    waiting on the engine; the drop must not raise, the pending read must see the
    end of the stream, nothing further is forwarded, and the engine's finally runs."""

    async def scenario() -> None:
        engine = GatedEngine()
        adapter = EngineAdapter(engine)
        stream = await adapter.generate({"token_ids": [1]}, Context())
        first = await stream.__anext__()
        assert first.data is not None and first.data["token_ids"] == [1]
        pending = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0)  # the read is now inside the engine, waiting on the gate

        await stream.aclose()
        engine.gate.set()
        try:
            item = await pending
        except StopAsyncIteration:
            item = None
        await adapter.settle()

        assert item is None, "nothing may be forwarded after the consumer dropped the stream"
        assert stream.machine.state.control is ControlState.DONE
        assert stream.machine.state.ended is StreamEnd.DROPPED
        assert engine.finally_ran == 1
        assert engine.aborts == 0, "a silent drop never aborts"
        assert adapter.close_failures == 0

    asyncio.run(scenario())
