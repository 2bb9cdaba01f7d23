"""Where the adapter's time per chunk goes, measured by rebuilding its per-chunk
work one piece at a time.

Each rung of the ladder is a consumer-facing stream over the same engine that
does everything the rung before it does plus one piece of the adapter's work,
made of the project's own parts: the model's call the adapter makes per chunk
(:meth:`StreamReader.read`, with and without the history) and the item it
forwards (:class:`ForwardedData`).  All rungs and the adapter itself run
interleaved, round by round; a row of the table is the median of the per-round
differences between a rung and the one before it.  The last row is the
adapter measured as it is minus the full ladder: what the adapter does beyond
the ladder (or, if negative, what it does more cheaply).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dynamo_backend_protocol.model import EventKind, Mode, RequestMachine, event
from dynamo_backend_protocol.model.reading import StreamReader
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.annotated import ForwardedData
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
    async for item in chunks:
        yield item


async def _annotated(chunks: Chunks) -> AsyncIterator[object]:
    forwarded = ForwardedData
    async for item in chunks:
        out = forwarded()
        out.data = item
        yield out


def _reader(keep_history: bool) -> StreamReader:
    """The model's reader of one request past setup, as the adapter makes it; its
    first tokens show it the state whose token step only forwards and stays put."""
    machine = RequestMachine(_MODE, keep_history=keep_history)
    machine.fire(_SETUP)
    return StreamReader(machine, validate=True, cancellation=asyncio.CancelledError, hear_signals=_no_signals)


def _no_signals() -> None:
    return None


async def _forward_read(chunks: Chunks, reader: StreamReader) -> AsyncIterator[object]:
    """Each chunk read by the model, then forwarded whatever the answer (every answer but
    the last chunk's is forward-only)."""
    read, forwarded = reader.read, ForwardedData
    async for item in chunks:
        read(item)
        out = forwarded()
        out.data = item
        yield out


def _read(chunks: Chunks) -> AsyncIterator[object]:
    return _forward_read(chunks, _reader(keep_history=False))


def _recorded(chunks: Chunks) -> AsyncIterator[object]:
    return _forward_read(chunks, _reader(keep_history=True))


class _Wrapped:
    """A stream object in front of the generator, as the adapter's: its ``__aiter__``
    hands out the generator itself, so it costs nothing per chunk."""

    __slots__ = ("_items",)

    def __init__(self, items: AsyncIterator[object]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncIterator[object]:
        return self._items


Rung = Callable[[Chunks], AsyncIterator[object]]


def _wrapped_recorded(chunks: Chunks) -> AsyncIterator[object]:
    return _Wrapped(_recorded(chunks))  # type: ignore[return-value]


LADDER: tuple[tuple[str, str, Rung], ...] = (
    ("layer", "async-generator layer: async for over the engine, yield", _layer),
    ("annotated", "Annotated allocated per chunk: object's own __init__ (C), one store", _annotated),
    ("read", "the model's StreamReader.read per chunk, history off: what the chunk is, which step", _read),
    ("recorded", "the same with the step recorded in the model's history", _recorded),
    ("wrapped", "stream object whose __aiter__ hands out the generator", _wrapped_recorded),
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


async def attribution(
    chunks: int, rounds: int = MIN_ROUNDS, slices: int = 1
) -> tuple[list[ProfileRow], Figure, Figure]:
    """The table's rows, the bare engine's cost and the adapter's cost, per chunk;
    ``chunks`` per request, ``slices`` requests per rung per round."""
    engine = TrivialEngine(chunks)
    adapter = EngineAdapter(engine)

    def rung_run(rung: Rung) -> Callable[[], Awaitable[None]]:
        return lambda: _drain(rung, engine)

    variants: dict[str, Callable[[], Awaitable[None]]] = {"bare": lambda: drain_bare(engine)}
    variants.update((name, rung_run(rung)) for name, _, rung in LADDER)
    variants["adapter"] = lambda: drain_adapter(adapter)
    samples = await interleaved(variants, rounds, slices)
    per_round = chunks * slices
    rows = [ProfileRow("engine", "the bare engine's own step (builds and yields the chunk)",
                       per_chunk(samples["bare"], per_round))]
    previous = "bare"
    for name, what, _ in LADDER:
        rows.append(ProfileRow(name, what, difference_per_chunk(samples[name], samples[previous], per_round)))
        previous = name
    rows.append(ProfileRow("rest", "the adapter as it is, minus the whole ladder",
                           difference_per_chunk(samples["adapter"], samples[previous], per_round)))
    return rows, per_chunk(samples["bare"], per_round), per_chunk(samples["adapter"], per_round)
