"""Where the adapter's time per chunk goes, measured by rebuilding its per-chunk
work one piece at a time.

Each rung of the ladder is a consumer-facing stream over the same engine that
does everything the rung before it does plus one piece of the adapter's work,
made of the project's own parts (``classify_item``, the machine's step cache
and history, :class:`Annotated`).  All rungs and the adapter itself run
interleaved, round by round; a row of the table is the median of the per-round
differences between a rung and the one before it.  The last row is the
adapter measured as it is minus the full ladder: what the adapter does beyond
the ladder (or, if negative, what it does more cheaply).

The rungs are written out in full, on purpose: one generator with a flag per
piece would add the flag's own cost to every rung.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dynamo_backend_protocol.model import EventKind, Mode, RequestMachine, event
from dynamo_backend_protocol.model.chunks import classify_item
from dynamo_backend_protocol.model.machine import FORWARD_ONLY
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.bench.engines import TrivialEngine, drain_adapter, drain_bare
from dynamo_backend_protocol.reference.bench.rounds import (
    MIN_ROUNDS,
    Figure,
    difference_per_chunk,
    interleaved,
    per_chunk,
)
from dynamo_backend_protocol.reference.context import Context

Chunks = AsyncIterator[dict[str, Any]]
_SETUP = event(EventKind.SETUP)
_MODE = Mode.AGGREGATED


async def _layer(chunks: Chunks) -> AsyncIterator[object]:
    next_chunk = chunks.__anext__
    while True:
        try:
            chunk = await next_chunk()
        except StopAsyncIteration:
            return
        yield chunk


async def _annotated(chunks: Chunks) -> AsyncIterator[object]:
    next_chunk = chunks.__anext__
    while True:
        try:
            chunk = await next_chunk()
        except StopAsyncIteration:
            return
        yield Annotated(chunk)


async def _classified(chunks: Chunks) -> AsyncIterator[object]:
    next_chunk = chunks.__anext__
    mode = _MODE
    position = 0
    while True:
        try:
            chunk = await next_chunk()
        except StopAsyncIteration:
            return
        position += 1
        classify_item(chunk, position, mode, True)
        yield Annotated(chunk)


def _streaming_machine(keep_history: bool) -> RequestMachine:
    machine = RequestMachine(_MODE, keep_history=keep_history)
    machine.fire(_SETUP)
    return machine


async def _looked_up(chunks: Chunks) -> AsyncIterator[object]:
    machine = _streaming_machine(keep_history=False)
    next_chunk = chunks.__anext__
    mode = _MODE
    position = 0
    while True:
        try:
            chunk = await next_chunk()
        except StopAsyncIteration:
            return
        position += 1
        ev = classify_item(chunk, position, mode, True)
        state = machine.state
        step = state.successors.get(ev)
        if step is not None and step.actions is FORWARD_ONLY and step.after is state:
            yield Annotated(chunk)
            continue
        machine.fire(ev)  # type: ignore[arg-type]
        yield Annotated(chunk)


async def _recorded(chunks: Chunks) -> AsyncIterator[object]:
    machine = _streaming_machine(keep_history=True)
    record = machine.keep_step
    next_chunk = chunks.__anext__
    mode = _MODE
    position = 0
    while True:
        try:
            chunk = await next_chunk()
        except StopAsyncIteration:
            return
        position += 1
        ev = classify_item(chunk, position, mode, True)
        state = machine.state
        step = state.successors.get(ev)
        if step is not None and step.actions is FORWARD_ONLY and step.after is state:
            record(step)
            yield Annotated(chunk)
            continue
        machine.fire(ev)  # type: ignore[arg-type]
        yield Annotated(chunk)


class _Wrapped:
    """A stream object with a Python ``__anext__`` in front of the generator, as the adapter's."""

    __slots__ = ("_items",)

    def __init__(self, items: AsyncIterator[object]) -> None:
        self._items = items

    def __aiter__(self) -> _Wrapped:
        return self

    def __anext__(self) -> Awaitable[object]:
        return self._items.__anext__()


Rung = Callable[[Chunks], AsyncIterator[object]]


def _wrapped_recorded(chunks: Chunks) -> AsyncIterator[object]:
    return _Wrapped(_recorded(chunks))


LADDER: tuple[tuple[str, str, Rung], ...] = (
    ("layer", "async-generator layer: loop, read the engine, yield", _layer),
    ("annotated", "Annotated(item) allocated per chunk", _annotated),
    ("classified", "classify_item with validation", _classified),
    ("looked_up", "model step lookup (the successor cache, two identity checks)", _looked_up),
    ("recorded", "step recorded in the model's history", _recorded),
    ("wrapped", "stream object's __anext__ in front of the generator", _wrapped_recorded),
)


@dataclass(frozen=True)
class ProfileRow:
    name: str
    what: str
    cost: Figure

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "what": self.what, **self.cost.as_dict()}


async def _drain(rung: Rung, engine: TrivialEngine) -> None:
    async for _ in rung(engine.generate({}, Context())):
        pass


async def attribution(chunks: int, rounds: int = MIN_ROUNDS) -> tuple[list[ProfileRow], Figure, Figure]:
    """The table's rows, the bare engine's cost and the adapter's cost, per chunk."""
    engine = TrivialEngine(chunks)
    adapter = EngineAdapter(engine)

    def rung_run(rung: Rung) -> Callable[[], Awaitable[None]]:
        return lambda: _drain(rung, engine)

    variants: dict[str, Callable[[], Awaitable[None]]] = {"bare": lambda: drain_bare(engine)}
    variants.update((name, rung_run(rung)) for name, _, rung in LADDER)
    variants["adapter"] = lambda: drain_adapter(adapter)
    samples = await interleaved(variants, rounds)
    rows = [ProfileRow("engine", "the bare engine's own step (builds and yields the chunk)",
                       per_chunk(samples["bare"], chunks))]
    previous = "bare"
    for name, what, _ in LADDER:
        rows.append(ProfileRow(name, what, difference_per_chunk(samples[name], samples[previous], chunks)))
        previous = name
    rows.append(ProfileRow("rest", "the adapter as it is, minus the whole ladder",
                           difference_per_chunk(samples["adapter"], samples[previous], chunks)))
    return rows, per_chunk(samples["bare"], chunks), per_chunk(samples["adapter"], chunks)
