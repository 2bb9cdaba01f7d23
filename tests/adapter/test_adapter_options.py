"""EngineAdapter options a production user turns: keeping traces or not."""

from __future__ import annotations

import asyncio
import io
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model import ControlState
from dynamo_backend_protocol.reference import Context, EngineAdapter, JsonlTraceWriter, length, token


class CountingEngine:
    def __init__(self, tokens: int, terminal: bool = True) -> None:
        self.tokens = tokens
        self.terminal = terminal

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        for token_id in range(self.tokens):
            yield token(token_id)
        if self.terminal:
            yield length()

    async def cleanup(self) -> None:
        return None


def test_without_traces_a_long_stream_keeps_no_step_per_chunk() -> None:
    """A long-lived request must not grow memory with every chunk when nobody reads its trace;
    the model still decides every step, so the outcome is the same."""

    async def scenario() -> None:
        adapter = EngineAdapter(CountingEngine(5_000), keep_traces=False)
        stream = await adapter.generate({"token_ids": [1]}, Context())
        items = [item async for item in stream]
        assert len(items) == 5_001
        assert items[-1].data is not None and items[-1].data["finish_reason"] == "length"
        assert stream.trace == []
        assert stream.machine.state.control is ControlState.DONE

    asyncio.run(scenario())


def test_with_traces_every_chunk_is_a_step() -> None:
    """By default the trace holds one step per event: setup, each chunk, the terminal."""

    async def scenario() -> None:
        adapter = EngineAdapter(CountingEngine(3))
        stream = await adapter.generate({"token_ids": [1]}, Context())
        _ = [item async for item in stream]
        assert [step.event.name for step in stream.trace] == [
            "setup", "token_chunk", "token_chunk", "token_chunk", "terminal:length"
        ]

    asyncio.run(scenario())


def test_a_trace_sink_without_traces_is_refused_at_construction() -> None:
    """Asking for traces to be written while keeping none is a contradiction; say so at once."""
    with pytest.raises(ValueError, match="keep_traces"):
        EngineAdapter(CountingEngine(1), trace_sink=JsonlTraceWriter(io.StringIO()), keep_traces=False)


class TrackedEngine(CountingEngine):
    """Keeps a weak reference to every generator it hands out."""

    def __init__(self, tokens: int, terminal: bool = True) -> None:
        super().__init__(tokens, terminal)
        self.generators: list[weakref.ref[Any]] = []

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        produced = super().generate(request, context)
        self.generators.append(weakref.ref(produced))
        return produced


@pytest.mark.parametrize("ending", ["terminal", "exhausted", "dropped"])
def test_a_finished_request_holds_no_reference_to_the_engine_generator(ending: str) -> None:
    """Whatever way a request ends, the engine's generator must be free to be
    collected even while the client still holds the response stream."""

    async def scenario() -> None:
        engine = TrackedEngine(3, terminal=ending != "exhausted")
        adapter = EngineAdapter(engine)
        stream = await adapter.generate({"token_ids": [1]}, Context())
        if ending == "dropped":
            await stream.__anext__()
            await stream.aclose()
        else:
            _ = [item async for item in stream]
        await adapter.settle()
        assert engine.generators[0]() is None, f"engine generator still referenced after {ending}"

    asyncio.run(scenario())
