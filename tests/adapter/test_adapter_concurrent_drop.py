"""Dropping a stream from another task while a read is pending (a runtime's disconnect handler)."""

from __future__ import annotations

import asyncio
import contextlib
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
        pending = asyncio.ensure_future(stream.__anext__())
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


class SlowSetupEngine:
    """A coroutine-style engine whose setup waits until the test releases it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        await self.release.wait()
        return GatedEngine().generate(request, context)

    async def cleanup(self) -> None:
        return None


def test_caller_cancelled_during_setup_ends_the_request_as_a_failed_setup() -> None:
    """A caller that gives up while the engine sets up leaves no live request
    behind: the request is traced and ends as a failed setup, without abort."""

    async def scenario() -> None:
        traced: list[list[str]] = []
        adapter = EngineAdapter(
            SlowSetupEngine(), trace_sink=lambda request, steps: traced.append([s.event.name for s in steps])
        )
        context = Context()
        setting_up = asyncio.create_task(adapter.generate({"token_ids": [1]}, context))
        await asyncio.sleep(0)
        context.stop_generating()
        setting_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await setting_up
        await adapter.settle()
        assert traced == [["stop", "setup_failed"]]
        assert not context.has_listeners()

    asyncio.run(scenario())
