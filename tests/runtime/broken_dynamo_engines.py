"""Engines written against Dynamo's real API (``LLMEngine``, ``from_args``), each with one fault.

``TinyEngine`` conforms; each subclass breaks one thing (marked ``BUG``), one per
fault class the kit must name the same way with and without ``--runtime dynamo``.
Importing this module needs Dynamo's packages.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from dynamo._core import Context
from dynamo.common.backend.engine import EngineConfig, GenerateChunk, GenerateRequest, LLMEngine
from dynamo.common.backend.worker import WorkerConfig
from dynamo.common.constants import DisaggregationMode

MODEL = "tiny-model"
STEP = 0.002
"""Seconds per token."""
DRAIN = 0.2
"""Seconds StrandedByAbort takes to wind a stopped request down: the runtime's abort() always comes within it."""


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class TinyEngine(LLMEngine):
    """Streams ``max_tokens`` tokens, checking for a stop before each; ends with one terminal."""

    step = STEP

    def __init__(self, mode: DisaggregationMode) -> None:
        self.disaggregation_mode = mode

    @classmethod
    async def from_args(cls, argv: list[str] | None = None) -> tuple[TinyEngine, Any]:
        parser = argparse.ArgumentParser(prog="tiny-engine")
        parser.add_argument("--disaggregation-mode", choices=["agg"], default="agg")
        args = parser.parse_args(argv)
        mode = DisaggregationMode(args.disaggregation_mode)
        return cls(mode), WorkerConfig(namespace="tiny", component="tiny", model_name=MODEL,
                                       disaggregation_mode=mode)

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model=MODEL)

    async def generate(self, request: GenerateRequest, context: Context) -> AsyncGenerator[GenerateChunk, None]:
        prompt = len(request["token_ids"])
        limit = (request.get("stop_conditions") or {}).get("max_tokens") or 8
        for produced in range(limit):
            if self.notices_stop(context):
                yield {"token_ids": [], "index": 0, "finish_reason": "cancelled",
                       "completion_usage": _usage(prompt, produced)}
                return
            await asyncio.sleep(self.step)
            if produced == limit - 1:
                yield {"token_ids": [produced], "index": 0, "finish_reason": "length",
                       "completion_usage": _usage(prompt, limit)}
                async for extra in self.after_terminal():
                    yield extra
                return
            yield {"token_ids": [produced], "index": 0}

    def notices_stop(self, context: Context) -> bool:
        return context.is_stopped()

    async def after_terminal(self) -> AsyncGenerator[GenerateChunk, None]:
        return
        yield {}

    async def cleanup(self) -> None:
        return None


class IgnoresStops(TinyEngine):
    def notices_stop(self, context: Context) -> bool:
        return False  # BUG: never looks at the context, so a stopped request runs to its end


class IgnoresKills(TinyEngine):
    def notices_stop(self, context: Context) -> bool:
        return context.is_stopped() and not context.is_killed()  # BUG: a kill is a stop too


class AbortRaises(TinyEngine):
    async def abort(self, context: Context) -> None:
        raise RuntimeError("abort: lost track of the request")  # BUG: abort must not raise


class ChunkAfterTerminal(TinyEngine):
    async def after_terminal(self) -> AsyncGenerator[GenerateChunk, None]:
        yield {"token_ids": [99], "index": 0}  # BUG: an item after the terminal


class NoTerminal(TinyEngine):
    async def generate(self, request: GenerateRequest, context: Context) -> AsyncGenerator[GenerateChunk, None]:
        limit = (request.get("stop_conditions") or {}).get("max_tokens") or 8
        for produced in range(limit):
            if context.is_stopped():
                break
            await asyncio.sleep(STEP)
            yield {"token_ids": [produced], "index": 0}  # BUG: the last chunk carries no finish_reason


class StrandedByAbort(TinyEngine):
    """Tokens come from a producer task through a queue; the producer winds a stopped request down (a short
    drain) and then sends the 'cancelled' terminal."""

    def __init__(self, mode: DisaggregationMode) -> None:
        super().__init__(mode)
        self.producers: dict[str, asyncio.Task[None]] = {}

    async def generate(self, request: GenerateRequest, context: Context) -> AsyncGenerator[GenerateChunk, None]:
        queue: asyncio.Queue[GenerateChunk] = asyncio.Queue()
        producer = asyncio.get_running_loop().create_task(self.produce(request, context, queue))
        self.producers[context.id()] = producer
        try:
            while True:
                chunk = await queue.get()
                yield chunk
                if chunk.get("finish_reason") is not None:
                    return
        finally:
            producer.cancel()

    async def produce(self, request: GenerateRequest, context: Context, queue: asyncio.Queue[GenerateChunk]) -> None:
        prompt = len(request["token_ids"])
        limit = (request.get("stop_conditions") or {}).get("max_tokens") or 8
        for produced in range(limit):
            if context.is_stopped():
                await asyncio.sleep(DRAIN)
                await queue.put({"token_ids": [], "index": 0, "finish_reason": "cancelled",
                                 "completion_usage": _usage(prompt, produced)})
                return
            await asyncio.sleep(STEP)
            last = produced == limit - 1
            await queue.put({"token_ids": [produced], "index": 0, "finish_reason": "length",
                             "completion_usage": _usage(prompt, limit)} if last else {"token_ids": [produced],
                                                                                     "index": 0})

    async def abort(self, context: Context) -> None:
        producer = self.producers.pop(context.id(), None)
        if producer is not None:
            producer.cancel()  # BUG: the stream still waits on the queue, which nothing will ever fill


SHORT = 6
"""Requests of at most this many tokens take ShortRequestsIgnoreStops' faulty path (the kit's fixed probes send
longer ones; its drawn schedules send shorter)."""


class ShortRequestsIgnoreStops(TinyEngine):
    """Short requests go through a batch path that never looks at their context: only the property-based phase,
    which draws short requests stopped at drawn points, reaches the fault."""

    def __init__(self, mode: DisaggregationMode) -> None:
        super().__init__(mode)
        self.short: set[str] = set()

    async def generate(self, request: GenerateRequest, context: Context) -> AsyncGenerator[GenerateChunk, None]:
        if ((request.get("stop_conditions") or {}).get("max_tokens") or 8) <= SHORT:
            self.short.add(context.id())
        async for chunk in super().generate(request, context):
            yield chunk

    def notices_stop(self, context: Context) -> bool:
        return context.is_stopped() and context.id() not in self.short  # BUG: a short request is stopped too


LATE = 12
"""Tokens after which IgnoresLateStops stops looking at the context (the kit's fixed stop acts after one)."""


class IgnoresLateStops(TinyEngine):
    """Looks at the context only in its first tokens, as an engine that checks for stops while it prefills:
    only a stop at a drawn later point reaches the fault.  Its tokens are slow enough (20 ms) that the fixed
    stop and kill, after one item, reach it well before its twelfth, however late the runtime hears a kill."""

    step = 10 * STEP

    def __init__(self, mode: DisaggregationMode) -> None:
        super().__init__(mode)
        self.looks: dict[str, int] = {}

    def notices_stop(self, context: Context) -> bool:
        looked = self.looks[context.id()] = self.looks.get(context.id(), 0) + 1
        return looked <= LATE and context.is_stopped()  # BUG: a stop after the first tokens is never seen
