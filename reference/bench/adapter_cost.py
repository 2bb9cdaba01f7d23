"""What the adapter costs per chunk against the bare engine and the floor.

Two engines: one that never suspends (the adapter's own cost shows in full)
and one that gives the loop a turn per token (as real engines do).  For each,
the bare engine, the adapter (traces kept, and for the first engine also
``keep_traces=False``) and the floor run interleaved, round by round, each
round reading several requests per variant in turn.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dynamo_backend_protocol.model.explore import explore_all
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.bench.engines import (
    TrivialEngine,
    YieldingEngine,
    drain_adapter,
    drain_bare,
    drain_floor,
)
from dynamo_backend_protocol.reference.bench.rounds import MIN_ROUNDS, Figure, interleaved, per_chunk, ratio
from dynamo_backend_protocol.reference.bench.targets import Figures, Target

TARGETS = (
    Target("adapter", "ratio_trivial", "<=", 3.5),
    Target("adapter", "ratio_yielding", "<=", 1.25),
    # "Measurably faster": untraced beats traced in at least three rounds of four.
    Target("adapter", "traces_off_ratio", "<", 1.0, statistic="q3"),
    Target("explore", "seconds", "<", 0.5),
    Target("conformance", "seconds", "<", 5.0),
)


@dataclass(frozen=True)
class AdapterSizes:
    trivial_chunks: int
    """Chunks per request of the engine that never suspends; a round reads ``slices`` requests."""
    yielding_chunks: int
    rounds: int = MIN_ROUNDS
    slices: int = 1
    """Requests per variant per round, alternating between the variants."""

    @classmethod
    def choose(cls, quick: bool, rounds: int = MIN_ROUNDS) -> AdapterSizes:
        # Full size: 50,000 and 10,000 chunks per variant per round, as ten requests each.
        return cls(1_000, 250, rounds, 2) if quick else cls(5_000, 1_000, rounds, 10)

    def per_round(self, chunks: int) -> int:
        return chunks * self.slices


async def adapter_figures(
    sizes: AdapterSizes, adapter_type: Callable[..., EngineAdapter] = EngineAdapter
) -> dict[str, Figure | int]:
    """``adapter_type`` is the adapter class measured (a test plants a slow one)."""
    trivial = TrivialEngine(sizes.trivial_chunks)
    traced, untraced = adapter_type(trivial), adapter_type(trivial, keep_traces=False)
    samples = await interleaved(
        {
            "bare": lambda: drain_bare(trivial),
            "adapter": lambda: drain_adapter(traced),
            "adapter_untraced": lambda: drain_adapter(untraced),
            "floor": lambda: drain_floor(trivial),
        },
        sizes.rounds,
        sizes.slices,
    )
    yielding = YieldingEngine(sizes.yielding_chunks)
    yielding_adapter = adapter_type(yielding)
    yielding_samples = await interleaved(
        {
            "bare": lambda: drain_bare(yielding),
            "adapter": lambda: drain_adapter(yielding_adapter),
            "floor": lambda: drain_floor(yielding),
        },
        sizes.rounds,
        sizes.slices,
    )
    chunks, yielding_chunks = sizes.per_round(sizes.trivial_chunks), sizes.per_round(sizes.yielding_chunks)
    return {
        "chunks_per_request_trivial": sizes.trivial_chunks,
        "chunks_per_request_yielding": sizes.yielding_chunks,
        "requests_per_round": sizes.slices,
        "bare_trivial": per_chunk(samples["bare"], chunks),
        "adapter_trivial": per_chunk(samples["adapter"], chunks),
        "adapter_trivial_untraced": per_chunk(samples["adapter_untraced"], chunks),
        "floor_trivial": per_chunk(samples["floor"], chunks),
        "ratio_trivial": ratio(samples["adapter"], samples["bare"]),
        "floor_ratio_trivial": ratio(samples["floor"], samples["bare"]),
        "traces_off_ratio": ratio(samples["adapter_untraced"], samples["adapter"]),
        "bare_yielding": per_chunk(yielding_samples["bare"], yielding_chunks),
        "adapter_yielding": per_chunk(yielding_samples["adapter"], yielding_chunks),
        "floor_yielding": per_chunk(yielding_samples["floor"], yielding_chunks),
        "ratio_yielding": ratio(yielding_samples["adapter"], yielding_samples["bare"]),
        "floor_ratio_yielding": ratio(yielding_samples["floor"], yielding_samples["bare"]),
    }


async def explore_figures(rounds: int = MIN_ROUNDS) -> Figures:
    async def explore() -> None:
        explore_all()

    samples = await interleaved({"explore": explore}, rounds)
    return {"seconds": Figure.of([ns / 1e9 for ns in samples["explore"]], "s")}


async def conformance_figures(conformance: Callable[[], Awaitable[None]]) -> Figures:
    """One wall-clock run: the conformance run waits on timers, so CPU time would understate it."""
    started = time.perf_counter()
    await conformance()
    return {"seconds": time.perf_counter() - started}
