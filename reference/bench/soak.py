"""Load and soak: many concurrent requests ending every way, and one very long stream.

The concurrent part starts every request (agg and decode, a seeded mix of
fates), then consumes them all at once.  Afterwards it counts what is left
(tasks, context watches), what escaped (exceptions raised into a consumer,
reported to the event loop's handler, or unraisable), and compares each
request's abort calls, as the engine counted them, and its recorded events
with what the model predicts for its plan (:mod:`.prediction`).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.reference.adapter import EngineAdapter, ResponseStream
from dynamo_backend_protocol.reference.bench.engines import TrivialEngine
from dynamo_backend_protocol.reference.bench.memory import MIB, peak_rss_bytes, reset_peak, rss_bytes
from dynamo_backend_protocol.reference.bench.prediction import (
    AFTER_READING,
    BEFORE_READING,
    MODES,
    Plan,
    plan_requests,
    predict,
)
from dynamo_backend_protocol.reference.bench.targets import Figures, Target
from dynamo_backend_protocol.reference.context import Context

SEED = 20261127
TOKENS = 4

TARGETS = (
    Target("soak", "tasks_left", "==", 0),
    Target("soak", "watches_left", "==", 0),
    Target("soak", "exceptions_escaped", "==", 0),
    Target("soak", "abort_mismatches", "==", 0),
    Target("soak", "event_mismatches", "==", 0),
    Target("soak", "long_stream_rss_growth_mib", "<=", 10.0),
)


@dataclass(frozen=True)
class SoakSizes:
    requests: int
    stream_chunks: int

    @classmethod
    def choose(cls, quick: bool) -> SoakSizes:
        return cls(2_000, 50_000) if quick else cls(100_000, 5_000_000)


class SoakEngine:
    """Yields ``tokens`` tokens, each after a turn of the loop; once the request is
    stopped it yields the request's ``late`` tokens more, then a ``cancelled``
    terminal.  Counts abort calls per request."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.aborts: dict[str, int] = {}

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        late = request.get("late", 0)
        for token_id in range(self.tokens):
            await asyncio.sleep(0)
            if context.is_stopped():
                if not late:
                    yield {"token_ids": [], "finish_reason": "cancelled"}
                    return
                late -= 1
            yield {"token_ids": [token_id], "index": 0}
        yield {"token_ids": [], "finish_reason": "stop"}

    async def abort(self, context: Context) -> None:
        self.aborts[context.id()] = self.aborts.get(context.id(), 0) + 1

    async def cleanup(self) -> None:
        return None


@dataclass
class _Escapes:
    """Exceptions that got past the adapter, wherever they surfaced."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def saw(self, description: str) -> None:
        self.count += 1
        if not self.first:
            self.first.append(description)


async def _consume(plan: Plan, context: Context, stream: ResponseStream, escapes: _Escapes) -> None:
    try:
        if plan.fate in BEFORE_READING:
            _signal(context, BEFORE_READING[plan.fate])
        read = 0
        async for _ in stream:
            read += 1
            if read == plan.after and plan.fate in AFTER_READING:
                signal = AFTER_READING[plan.fate]
                if signal == "drop":
                    await stream.aclose()
                    return
                _signal(context, signal)
    except Exception as exc:
        escapes.saw(f"{plan.request}: {type(exc).__name__}: {exc}")


def _signal(context: Context, signal: str) -> None:
    if signal == "stop":
        context.stop_generating()
    else:
        context.kill()


Counts = dict[str, float | int | str | None]


async def concurrent_requests(
    requests: int, tokens: int = TOKENS, seed: int = SEED, engine_type: type[SoakEngine] = SoakEngine
) -> Counts:
    """``engine_type`` is the engine driven (a test plants one that miscounts)."""
    loop = asyncio.get_running_loop()
    escapes = _Escapes()
    loop.set_exception_handler(lambda _loop, report: escapes.saw(f"event loop: {report.get('message')}"))
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: escapes.saw(f"unraisable: {unraisable.exc_value!r}")
    try:
        tasks_before = asyncio.all_tasks()
        plans = plan_requests(requests, seed, tokens)
        engine = engine_type(tokens)
        adapters = {mode: EngineAdapter(engine, mode) for mode in MODES}
        gc.collect()
        rss_before = rss_bytes()
        peak_is_the_soaks = reset_peak()
        started, cpu_started = time.perf_counter(), time.process_time()
        contexts = [Context(plan.request) for plan in plans]
        streams = [await adapters[plan.mode].generate({"token_ids": [1, 2, 3], "late": plan.late}, context)
                   for plan, context in zip(plans, contexts, strict=True)]
        await asyncio.gather(*(_consume(plan, context, stream, escapes)
                               for plan, context, stream in zip(plans, contexts, streams, strict=True)))
        for adapter in adapters.values():
            await adapter.settle()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        peak = peak_rss_bytes()
        gc.collect()
        tasks_left = len(asyncio.all_tasks() - tasks_before)
    finally:
        sys.unraisablehook = previous_hook
        loop.set_exception_handler(None)
    predictions = [predict(plan, tokens) for plan in plans]
    events = [tuple(step.event.name for step in stream.trace) for stream in streams]
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_rss_counted_from": "soak start" if peak_is_the_soaks else "process start",
        "bytes_per_in_flight_request": round((peak - rss_before) / requests),
        "tasks_left": tasks_left,
        "watches_left": sum(1 for context in contexts if context.has_listeners()),
        "exceptions_escaped": escapes.count,
        "first_escaped": escapes.first[0] if escapes.first else None,
        "abort_calls": sum(engine.aborts.values()),
        "predicted_aborts": sum(prediction.aborts for prediction in predictions),
        "abort_mismatches": sum(
            1 for plan, prediction in zip(plans, predictions, strict=True)
            if engine.aborts.get(plan.request, 0) != prediction.aborts
        ),
        "event_mismatches": sum(
            1 for seen, prediction in zip(events, predictions, strict=True) if seen != prediction.events
        ),
    }


async def long_stream(chunks: int) -> Counts:
    """One request of ``chunks`` chunks with ``keep_traces=False``; RSS while it is
    live, near its start and just before its last chunk."""
    adapter = EngineAdapter(TrivialEngine(chunks), keep_traces=False)
    stream = await adapter.generate({}, Context("long-stream"))
    start = end = 0
    early, late = min(1_000, chunks // 2), chunks - 1
    started = time.perf_counter()
    read = 0
    async for _ in stream:
        read += 1
        if read == early:
            gc.collect()
            start = rss_bytes()
        elif read == late:
            gc.collect()
            end = rss_bytes()
    return {
        "long_stream_chunks": read,
        "long_stream_seconds": round(time.perf_counter() - started, 3),
        "long_stream_rss_start_mib": round(start / MIB, 1),
        "long_stream_rss_end_mib": round(end / MIB, 1),
        "long_stream_rss_growth_mib": round((end - start) / MIB, 2),
    }


async def soak_figures(sizes: SoakSizes, seed: int = SEED) -> Figures:
    # The long stream first: its RSS then starts from a process the soak has not grown.
    long = await long_stream(sizes.stream_chunks)
    return {**await concurrent_requests(sizes.requests, seed=seed), **long}
