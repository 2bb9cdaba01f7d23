"""A response stream read under another event loop than the one that set it up (FAULT-STREAM-LOOP).

The spec chooses refusal: the first read raises, before anything is read from
the engine, and the stream is still whole on its own loop, where a stop reaches
``engine.abort``.  Before, a stop read under the other loop was recorded as
``call_abort`` while ``engine.abort`` was never called.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import Context, EngineAdapter, cancelled, token
from dynamo_backend_protocol.reference.loop_affinity import ForeignEventLoop, require_home_loop
from hostile_helpers import REQUEST, HostileEngine

AGG = Mode.AGGREGATED


class StoppableStream(HostileEngine):
    """Yields tokens until its context is stopped, then a cancelled terminal; counts what was pulled."""

    def generate(self, request: dict[str, Any], context: Context) -> Any:
        return self._stream(context)

    async def _stream(self, context: Context) -> Any:
        with self.lifetime():
            for step in range(1, 100):
                if context.is_stopped():
                    yield cancelled()
                    return
                self.record.items_yielded += 1
                yield token(step)
                await asyncio.sleep(0)


def test_a_stream_read_under_another_event_loop_is_refused_at_the_first_read() -> None:
    """FAULT-STREAM-LOOP: refused with a clear error at the first read, nothing pulled from the engine;
    read on its own loop afterwards, the stream is whole and a stop reaches engine.abort."""
    engine = StoppableStream()
    context = Context("elsewhere")
    home = asyncio.new_event_loop()
    try:
        stream = home.run_until_complete(EngineAdapter(engine, AGG).generate(REQUEST, context))

        async def read_under_another_loop() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):
                await stream.__anext__()
            with pytest.raises(RuntimeError, match="another event loop"):
                async for _item in stream:
                    pass

        asyncio.run(read_under_another_loop())
        assert engine.record.items_yielded == 0

        async def read_at_home() -> list[object]:
            items: list[object] = []
            async for item in stream:
                items.append(item)
                context.stop_generating()
            await asyncio.sleep(0.05)  # the abort task the stop started
            return items

        items = home.run_until_complete(read_at_home())
    finally:
        home.close()
    assert len(items) >= 2
    assert engine.aborts == 1


def test_the_home_loop_check_names_the_misuse() -> None:
    """FAULT-STREAM-LOOP: the check the adapter makes at each read, on its own."""
    home = asyncio.new_event_loop()
    try:
        async def on_another_loop() -> None:
            with pytest.raises(ForeignEventLoop, match="set up on another event loop"):
                require_home_loop(home)

        asyncio.run(on_another_loop())

        async def at_home() -> None:
            require_home_loop(home)

        home.run_until_complete(at_home())
    finally:
        home.close()
