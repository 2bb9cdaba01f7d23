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
from dynamo_backend_protocol.model.chunks import TOKEN_CHUNK, classify_item
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.annotated import Annotated, ForwardedData
from dynamo_backend_protocol.reference.bench.engines import TrivialEngine, drain_adapter, drain_bare
from dynamo_backend_protocol.reference.bench.rounds import (
    MIN_ROUNDS,
    Figure,
    difference_per_chunk,
    interleaved,
    per_chunk,
)
from dynamo_backend_protocol.reference.chunks import Chunk
from dynamo_backend_protocol.reference.context import Context

Chunks = AsyncIterator[dict[str, Any]]
_SETUP = event(EventKind.SETUP)
_MODE = Mode.AGGREGATED
_FIRST_CHOICE = 0


async def _layer(chunks: Chunks) -> AsyncIterator[object]:
    async for item in chunks:
        yield item


async def _annotated(chunks: Chunks) -> AsyncIterator[object]:
    forwarded = ForwardedData
    async for item in chunks:
        out = forwarded()
        out.data = item
        yield out


# The rungs below repeat the adapter's inline check word for word (a test compares
# their syntax trees with the adapter's), with the same names bound as locals.


async def _classified(chunks: Chunks) -> AsyncIterator[object]:
    mode = _MODE
    position = 0.0
    type_of, plain_dict, kit_chunk, plain_list, plain_int, length = type, dict, Chunk, list, int, len
    first_choice, forwarded = _FIRST_CHOICE, ForwardedData
    unpacking = True
    async for item in chunks:
        position += 1.0
        try:
            token_id: Any = None
            if type_of(item) is plain_dict or type_of(item) is kit_chunk:
                try:
                    if type_of(token_ids := item["token_ids"]) is plain_list:
                        if unpacking:
                            [token_id] = token_ids
                        elif length(token_ids) == 1:
                            token_id = token_ids[0]
                except (KeyError, ValueError):
                    unpacking = False
            if (
                type_of(token_id) is plain_int
                and token_id >= 0
                and (
                    (keys := length(item)) == 1
                    or (keys == 2 and item.get("index") is first_choice)
                    or (
                        ("finish_reason" not in item or item["finish_reason"] is None)
                        and "completion_usage" not in item
                        and (
                            item.get("index", first_choice) is first_choice
                            or (type_of(choice := item["index"]) is plain_int and choice >= 0)
                        )
                    )
                )
            ):
                out = forwarded()
                out.data = item
                yield out
                continue
            else:
                classify_item(item, int(position), mode, True)
        except Exception:
            pass
        out = forwarded()
        out.data = item
        yield out


def _streaming_machine(keep_history: bool) -> RequestMachine:
    """A machine past setup and its first two tokens: in the state whose token step
    only forwards and stays put (the first token may move it)."""
    machine = RequestMachine(_MODE, keep_history=keep_history)
    machine.fire(_SETUP)
    machine.fire(TOKEN_CHUNK)
    machine.fire(TOKEN_CHUNK)
    return machine


async def _looked_up(chunks: Chunks) -> AsyncIterator[object]:
    machine = _streaming_machine(keep_history=False)
    token_state = machine.state
    mode = _MODE
    position = 0.0
    type_of, plain_dict, kit_chunk, plain_list, plain_int, length = type, dict, Chunk, list, int, len
    first_choice, forwarded = _FIRST_CHOICE, ForwardedData
    unpacking = True
    async for item in chunks:
        position += 1.0
        try:
            token_id: Any = None
            if type_of(item) is plain_dict or type_of(item) is kit_chunk:
                try:
                    if type_of(token_ids := item["token_ids"]) is plain_list:
                        if unpacking:
                            [token_id] = token_ids
                        elif length(token_ids) == 1:
                            token_id = token_ids[0]
                except (KeyError, ValueError):
                    unpacking = False
            if (
                type_of(token_id) is plain_int
                and token_id >= 0
                and (
                    (keys := length(item)) == 1
                    or (keys == 2 and item.get("index") is first_choice)
                    or (
                        ("finish_reason" not in item or item["finish_reason"] is None)
                        and "completion_usage" not in item
                        and (
                            item.get("index", first_choice) is first_choice
                            or (type_of(choice := item["index"]) is plain_int and choice >= 0)
                        )
                    )
                )
            ):
                if machine.state is token_state:
                    out = forwarded()
                    out.data = item
                    yield out
                    continue
            else:
                classify_item(item, int(position), mode, True)
        except Exception:
            pass
        machine.fire(TOKEN_CHUNK)
        yield Annotated(item)


async def _recorded(chunks: Chunks) -> AsyncIterator[object]:
    machine = _streaming_machine(keep_history=True)
    token_state = machine.state
    token_step = machine.history[-1]
    history = machine.history
    keeping = True
    mode = _MODE
    position = 0.0
    type_of, plain_dict, kit_chunk, plain_list, plain_int, length = type, dict, Chunk, list, int, len
    first_choice, forwarded = _FIRST_CHOICE, ForwardedData
    unpacking = True
    async for item in chunks:
        position += 1.0
        try:
            token_id: Any = None
            if type_of(item) is plain_dict or type_of(item) is kit_chunk:
                try:
                    if type_of(token_ids := item["token_ids"]) is plain_list:
                        if unpacking:
                            [token_id] = token_ids
                        elif length(token_ids) == 1:
                            token_id = token_ids[0]
                except (KeyError, ValueError):
                    unpacking = False
            if (
                type_of(token_id) is plain_int
                and token_id >= 0
                and (
                    (keys := length(item)) == 1
                    or (keys == 2 and item.get("index") is first_choice)
                    or (
                        ("finish_reason" not in item or item["finish_reason"] is None)
                        and "completion_usage" not in item
                        and (
                            item.get("index", first_choice) is first_choice
                            or (type_of(choice := item["index"]) is plain_int and choice >= 0)
                        )
                    )
                )
            ):
                if machine.state is token_state:
                    if keeping:
                        history.append(token_step)
                    out = forwarded()
                    out.data = item
                    yield out
                    continue
            else:
                classify_item(item, int(position), mode, True)
        except Exception:
            pass
        machine.fire(TOKEN_CHUNK)
        yield Annotated(item)


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
    ("classified", "the common token chunk checked inline (classify_item otherwise)", _classified),
    ("looked_up", "model step: the state is the one whose token step only forwards (one identity check)",
     _looked_up),
    ("recorded", "step recorded in the model's history", _recorded),
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
