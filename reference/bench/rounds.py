"""Interleaved rounds timed by the running thread's CPU time, and their statistics.

Variants of one comparison run one after another inside each round (bare,
adapter, floor, bare, adapter, floor, ...), so a burst of load from elsewhere
on the machine lands on every variant of a round alike instead of on one block
of runs.  A round may alternate its variants several times over (slices) and
count each variant's slices together: a burst then lands on a slice, a fraction
of the round, and per-round ratios come out steadier.  CPU time of the thread
(``time.thread_time_ns``) leaves out the time the thread was not scheduled.
Each figure is the median over rounds with its interquartile spread, and a
ratio is the median of the per-round ratios.

pyperf was considered and not used: it runs each benchmark in its own worker
processes, one after the other, and times wall-clock; neither the interleaving
nor the per-round ratio is what it offers.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

MIN_ROUNDS = 21

Run = Callable[[], Awaitable[None]]
"""One timed run of a variant: for example, drain one engine stream."""


@dataclass(frozen=True)
class Figure:
    """A measured quantity over rounds: its median and its interquartile range."""

    median: float
    q1: float
    q3: float
    unit: str

    @property
    def spread(self) -> float:
        """The interquartile range, q3 - q1, in the figure's unit."""
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float], unit: str) -> Figure:
        if len(samples) < 2:
            raise ValueError("a figure needs at least two samples")
        q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(median=median, q1=q1, q3=q3, unit=unit)

    def as_dict(self) -> dict[str, float | str]:
        digits = 1 if self.unit == "ns/chunk" else 4
        q1, q3 = round(self.q1, digits), round(self.q3, digits)
        return {"median": round(self.median, digits), "q1": q1, "q3": q3, "spread": round(q3 - q1, digits),
                "unit": self.unit}

    def show(self) -> str:
        unit = "" if self.unit == "ratio" else f" {self.unit}"
        return f"{self.median:,.4g}{unit} (IQR {self.q1:,.4g} to {self.q3:,.4g})"


async def _timed(run: Run) -> int:
    gc.collect()
    started = time.thread_time_ns()
    await run()
    return time.thread_time_ns() - started


async def interleaved(
    variants: Mapping[str, Run], rounds: int = MIN_ROUNDS, slices: int = 1
) -> dict[str, list[int]]:
    """CPU nanoseconds of each variant in each round, variants in the given order
    within a round, ``slices`` times over, a round's sample being the sum of its
    slices; one unrecorded warm-up pass first."""
    if rounds < MIN_ROUNDS:
        raise ValueError(f"at least {MIN_ROUNDS} rounds are needed, got {rounds}")
    if slices < 1:
        raise ValueError(f"a round needs at least one slice, got {slices}")
    # Objects that exist before the runs (the caller's, a test runner's) are set
    # aside, so a collection during a run costs the same whatever else is alive.
    gc.collect()
    gc.freeze()
    try:
        for run in variants.values():
            await _timed(run)
        samples: dict[str, list[int]] = {name: [] for name in variants}
        for _ in range(rounds):
            totals = dict.fromkeys(variants, 0)
            for _ in range(slices):
                for name, run in variants.items():
                    totals[name] += await _timed(run)
            for name, total in totals.items():
                samples[name].append(total)
    finally:
        gc.unfreeze()
    return samples


def per_chunk(samples: Sequence[int], chunks: int) -> Figure:
    return Figure.of([ns / chunks for ns in samples], "ns/chunk")


def ratio(numerators: Sequence[int], denominators: Sequence[int]) -> Figure:
    """The per-round ratios, numerator run over denominator run of the same round."""
    return Figure.of([top / bottom for top, bottom in zip(numerators, denominators, strict=True)], "ratio")


def difference_per_chunk(minuends: Sequence[int], subtrahends: Sequence[int], chunks: int) -> Figure:
    """The per-round difference of two variants, in nanoseconds per chunk."""
    return Figure.of(
        [(more - less) / chunks for more, less in zip(minuends, subtrahends, strict=True)], "ns/chunk"
    )
