"""Measurements of the adapter's cost, side by side with the bare engine.

Every figure is measured in one run on this machine: bare iteration versus the
adapter over the same engine, a cancellation storm of concurrent requests, the
exhaustive exploration, and a conformance run of the bundled engine.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.model import (
    Mode,
)
from dynamo_backend_protocol.model.explore import explore_all
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.reference.adapter import EngineAdapter, ResponseStream
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.context import Context

_TOKEN: dict[str, Any] = {"token_ids": [7], "index": 0}


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


async def _drain_bare(engine: TrivialEngine) -> float:
    started = time.perf_counter()
    async for _ in engine.generate({}, Context()):
        pass
    return time.perf_counter() - started


async def _drain_adapter(engine: TrivialEngine) -> float:
    adapter = EngineAdapter(engine)
    started = time.perf_counter()
    stream = await adapter.generate({}, Context())
    async for _ in stream:
        pass
    return time.perf_counter() - started


async def _pass_through(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Annotated]:
    async for item in items:
        yield Annotated(item)


async def _drain_floor(engine: TrivialEngine) -> float:
    """The least any adapter can cost in Python: one async-generator layer that
    wraps each chunk in an Annotated and checks nothing."""
    started = time.perf_counter()
    async for _ in _pass_through(engine.generate({}, Context())):
        pass
    return time.perf_counter() - started


async def _best_rate(run: Callable[[], Awaitable[float]], chunks: int, repeats: int) -> float:
    """Chunks per second of the fastest of ``repeats`` runs (the least disturbed one)."""
    return chunks / min([await run() for _ in range(repeats)])


@dataclass
class StormResult:
    requests: int
    seconds: float
    bytes_per_request: float
    leaked_tasks: int
    abort_mismatches: int
    violations: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 4),
            "bytes_per_request": round(self.bytes_per_request, 1),
            "leaked_tasks": self.leaked_tasks,
            "abort_mismatches": self.abort_mismatches,
            "violations": self.violations,
        }


class StormEngine:
    """Counts aborts per request and honours cancellation with a ``cancelled`` terminal."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.aborts: dict[str, int] = {}

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        for _ in range(self.tokens):
            await asyncio.sleep(0)
            if context.is_stopped():
                yield {"token_ids": [], "finish_reason": "cancelled"}
                return
            yield _TOKEN
        yield {"token_ids": [], "finish_reason": "stop"}

    async def abort(self, context: Context) -> None:
        self.aborts[context.id()] = self.aborts.get(context.id(), 0) + 1

    async def cleanup(self) -> None:
        return None


FATES = ("complete", "stop", "kill", "drop", "stop_before_first_token")


@dataclass
class _Planned:
    context: Context
    stream: ResponseStream
    fate: str
    after_chunks: int
    adapter: EngineAdapter = field(repr=False)


async def _consume(planned: _Planned) -> None:
    stream = planned.stream
    if planned.fate == "stop_before_first_token":
        planned.context.stop_generating()
    read = 0
    async for _ in stream:
        read += 1
        if read == planned.after_chunks:
            if planned.fate == "stop":
                planned.context.stop_generating()
            elif planned.fate == "kill":
                planned.context.kill()
            elif planned.fate == "drop":
                await stream.aclose()
                return


async def _plan_storm(requests: int, seed: int, engine: StormEngine) -> list[_Planned]:
    rng = random.Random(seed)
    adapters = {mode: EngineAdapter(engine, mode) for mode in Mode}
    planned: list[_Planned] = []
    for number in range(requests):
        fate = rng.choice(FATES)
        mode = Mode.DECODE if fate == "stop_before_first_token" else rng.choice(tuple(Mode))
        context = Context(f"storm-{number}")
        adapter = adapters[mode]
        request = {"token_ids": [1, 2, 3]}
        stream = await adapter.generate(request, context)
        planned.append(_Planned(context, stream, fate, rng.randint(1, engine.tokens), adapter))
    return planned


def _violations(planned: list[_Planned]) -> int:
    count = 0
    for item in planned:
        for step in item.stream.trace:
            count += sum(1 for inv in STEP_INVARIANTS if not inv.holds(step))
        count += sum(1 for inv in STATE_INVARIANTS if not inv.holds(item.stream.machine.state))
    return count


async def cancellation_storm(requests: int = 10_000, tokens: int = 4, seed: int = 20261127) -> StormResult:
    """Many concurrent requests ending by every path; checked against the model."""
    tasks_before = asyncio.all_tasks()
    engine = StormEngine(tokens)
    planned = await _plan_storm(requests, seed, engine)
    started = time.perf_counter()
    await asyncio.gather(*(_consume(item) for item in planned))
    for adapter in {id(item.adapter): item.adapter for item in planned}.values():
        await adapter.settle()
    seconds = time.perf_counter() - started
    leaked = len(asyncio.all_tasks() - tasks_before)
    mismatches = sum(
        1 for item in planned if item.stream.machine.state.aborts != engine.aborts.get(item.context.id(), 0)
    )
    return StormResult(
        requests=requests,
        seconds=seconds,
        bytes_per_request=await _bytes_per_in_flight_request(min(requests, 2_000), tokens, seed),
        leaked_tasks=leaked,
        abort_mismatches=mismatches,
        violations=_violations(planned),
    )


async def _bytes_per_in_flight_request(requests: int, tokens: int, seed: int) -> float:
    """Memory the adapter and model hold per live request (the engine's and the caller's excluded)."""
    engine = StormEngine(tokens)
    contexts = [Context(f"memory-{n}") for n in range(requests)]
    adapter = EngineAdapter(engine, Mode.DECODE)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        streams = [await adapter.generate({"token_ids": [1]}, context) for context in contexts]
        # Each request has read one chunk, so its stream is live mid-flight.
        for stream in streams:
            await stream.__anext__()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, "*dynamo_backend_protocol/reference/adapter.py"),
            tracemalloc.Filter(True, "*dynamo_backend_protocol/reference/context.py"),
            tracemalloc.Filter(True, "*dynamo_backend_protocol/reference/annotated.py"),
            tracemalloc.Filter(True, "*dynamo_backend_protocol/model/*")]
    grown = sum(stat.size_diff for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename"))
    for stream in streams:
        await stream.aclose()
    await adapter.settle()
    return grown / requests


@dataclass
class BenchReport:
    bare_chunks_per_s: float
    adapter_chunks_per_s: float
    ratio_trivial: float
    bare_yielding_chunks_per_s: float
    adapter_yielding_chunks_per_s: float
    ratio_yielding: float
    floor_ratio_trivial: float
    floor_ratio_yielding: float
    storm: StormResult
    explore_seconds: float
    conformance_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "bare_chunks_per_s": round(self.bare_chunks_per_s),
            "adapter_chunks_per_s": round(self.adapter_chunks_per_s),
            "ratio_trivial": round(self.ratio_trivial, 3),
            "bare_yielding_chunks_per_s": round(self.bare_yielding_chunks_per_s),
            "adapter_yielding_chunks_per_s": round(self.adapter_yielding_chunks_per_s),
            "ratio_yielding": round(self.ratio_yielding, 3),
            "floor_ratio_trivial": round(self.floor_ratio_trivial, 3),
            "floor_ratio_yielding": round(self.floor_ratio_yielding, 3),
            "storm": self.storm.as_dict(),
            "explore_seconds": round(self.explore_seconds, 4),
            "conformance_seconds": None if self.conformance_seconds is None else round(self.conformance_seconds, 3),
        }


def _explore_seconds() -> float:
    started = time.perf_counter()
    explore_all()
    return time.perf_counter() - started


async def run_bench(quick: bool = False, conformance: Callable[[], Awaitable[float]] | None = None) -> BenchReport:
    chunks = 50_000 if quick else 300_000
    repeats = 2 if quick else 5
    trivial = TrivialEngine(chunks)
    bare = await _best_rate(lambda: _drain_bare(trivial), chunks, repeats)
    adapted = await _best_rate(lambda: _drain_adapter(trivial), chunks, repeats)
    floor = await _best_rate(lambda: _drain_floor(trivial), chunks, repeats)
    yielding_chunks = chunks // 5
    yielding = YieldingEngine(yielding_chunks)
    bare_yielding = await _best_rate(lambda: _drain_bare(yielding), yielding_chunks, repeats)
    adapted_yielding = await _best_rate(lambda: _drain_adapter(yielding), yielding_chunks, repeats)
    floor_yielding = await _best_rate(lambda: _drain_floor(yielding), yielding_chunks, repeats)
    storm = await cancellation_storm(2_000 if quick else 10_000)
    explore_seconds = min(_explore_seconds() for _ in range(3))
    conformance_seconds = None if conformance is None else await conformance()
    return BenchReport(
        bare_chunks_per_s=bare,
        adapter_chunks_per_s=adapted,
        ratio_trivial=bare / adapted,
        bare_yielding_chunks_per_s=bare_yielding,
        adapter_yielding_chunks_per_s=adapted_yielding,
        ratio_yielding=bare_yielding / adapted_yielding,
        floor_ratio_trivial=bare / floor,
        floor_ratio_yielding=bare_yielding / floor_yielding,
        storm=storm,
        explore_seconds=explore_seconds,
        conformance_seconds=conformance_seconds,
    )
