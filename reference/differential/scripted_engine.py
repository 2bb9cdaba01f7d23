"""The scripted recording engine: plays a play's engine script and records what reaches it.

The same class runs inside Dynamo's worker process and beside our adapter.
It uses only the context members both offer: ``id()``, ``is_stopped()``,
``is_killed()`` and ``notify_first_token()``.  Every observation is handed
to a sink as a JSON-able record, tagged with the play's name.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from dynamo_backend_protocol.reference.bounded import awaited_within
from dynamo_backend_protocol.reference.differential.plays import (
    PLANNED_ERROR,
    PLANNED_SETUP_ERROR,
    EngineStep,
)

Record = dict[str, Any]
Sink = Callable[[Record], None]

GATE_TIMEOUT = 4.0
"""Seconds a gate waits before it gives up and records the timeout.  Only a divergence ever
waits this long, so the bound is set for a loaded CI machine, where a stop sent before the
request can take over a second to reach the worker, not for speed."""
BARRIER_TIMEOUT = 6.0
"""Seconds a barrier request waits for a play's engine stream to end."""
_RESEND = 0.05
"""Seconds between the undeliverable chunks a probe sends to a client that left."""
_POLL = 0.001
"""How often a gate looks at the context: neither context offers a stop-or-kill
wait that both sides share with the same meaning for kill."""


class _Request:
    __slots__ = ("aborted", "ended", "first_token", "play")

    def __init__(self, play: str) -> None:
        self.play = play
        self.first_token = False
        self.aborted = asyncio.Event()
        self.ended = asyncio.Event()


class ScriptedEngine:
    """An engine whose every request follows the script carried in ``extra_args``."""

    def __init__(self, model: str, sink: Sink, typed_error: Callable[[str], Exception], mode_slug: str) -> None:
        self.model = model
        self.sink = sink
        self.typed_error = typed_error
        self.encode = mode_slug == "encode"
        self._by_context: dict[str, _Request] = {}
        self._by_play: dict[str, _Request] = {}

    async def start(self, worker_id: int) -> Any:
        raise NotImplementedError("the host wraps start: each side returns its own EngineConfig type")

    def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        script = (request.get("extra_args") or {}).get("differential") or {}
        barrier = script.get("barrier")
        if barrier is not None:
            return self._barrier(str(barrier))
        play = str(script["play"])
        record = _Request(play)
        self._by_context[context.id()] = record
        self._by_play[play] = record
        self.sink({"play": play, "event": "generate"})
        for step in map(EngineStep.from_json, script["setup"]):
            if step.op == "notify":
                record.first_token = True
                context.notify_first_token()
            elif step.op == "fail_setup":
                record.ended.set()
                self.sink({"play": play, "event": "ended", "how": "none", **_flags(context)})
                raise self.typed_error(PLANNED_SETUP_ERROR)
        steps = [EngineStep.from_json(step) for step in script["stream"]]
        return self._stream(record, steps, context)

    async def _stream(self, record: _Request, steps: list[EngineStep], context: Any) -> AsyncIterator[dict[str, Any]]:
        how = "completed"
        try:
            for step in steps:
                if step.op == "yield":
                    if step.tokens:
                        record.first_token = True
                    yield self._chunk(step)
                elif step.op == "probe":
                    record.first_token = True
                    async for chunk in self._probe(record, step, context):
                        yield chunk
                elif step.op == "notify":
                    record.first_token = True
                    context.notify_first_token()
                elif step.op == "raise":
                    how = "raised"
                    raise self.typed_error(PLANNED_ERROR)
                elif step.op == "end":
                    return
                elif step.op == "await_cancel":
                    await self._gate(record, step, functools.partial(_cancelled, context, step.killed))
                elif step.op == "await_abort":
                    await self._gate(record, step, record.aborted.is_set)
        except GeneratorExit:
            how = "closed"
            raise
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        finally:
            self.sink({"play": record.play, "event": "ended", "how": how, **_flags(context)})
            record.ended.set()

    async def _gate(self, record: _Request, step: EngineStep, opened: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_TIMEOUT
        while not opened():
            if loop.time() >= deadline:
                self.sink({"play": record.play, "event": "gate_timeout", "gate": _gate_name(step)})
                return
            await asyncio.sleep(_POLL)

    async def _probe(self, record: _Request, step: EngineStep, context: Any) -> AsyncIterator[dict[str, Any]]:
        """A client that left is heard when the worker fails to send to it; when
        that is depends on the transport, so send until the kill shows (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_TIMEOUT
        while not context.is_killed():
            if loop.time() >= deadline:
                self.sink({"play": record.play, "event": "gate_timeout", "gate": "kill visible"})
                return
            yield self._chunk(step)
            resend = loop.time() + _RESEND
            while not context.is_killed() and loop.time() < resend:
                await asyncio.sleep(_POLL)

    def _chunk(self, step: EngineStep) -> dict[str, Any]:
        chunk: dict[str, Any] = {"token_ids": list(step.tokens), "index": 0}
        if step.finish is not None:
            chunk["finish_reason"] = step.finish
            if self.encode and step.finish != "cancelled":
                chunk["encoder_result"] = {"embedding": "differential"}
        return chunk

    async def _barrier(self, play: str) -> AsyncIterator[dict[str, Any]]:
        """A request that ends once ``play``'s engine stream has ended: the client's
        gate between plays, so no play overlaps the next."""
        record = self._by_play.get(play)
        if record is not None:
            try:
                await awaited_within(record.ended.wait(), BARRIER_TIMEOUT)
            except TimeoutError:
                self.sink({"play": play, "event": "gate_timeout", "gate": "stream end"})
        yield {"token_ids": [], "index": 0, "finish_reason": "stop"}

    async def abort(self, context: Any) -> None:
        record = self._by_context.get(context.id())
        if record is None:
            self.sink({"play": None, "event": "abort", "context": context.id()})
            return
        self.sink({"play": record.play, "event": "abort", "after_first_token": record.first_token})
        record.aborted.set()

    async def cleanup(self) -> None:
        self.sink({"play": None, "event": "cleanup"})


def _cancelled(context: Any, killed: bool) -> bool:
    return bool(context.is_killed() if killed else context.is_stopped())


def _flags(context: Any) -> dict[str, bool]:
    return {"stopped": bool(context.is_stopped()), "killed": bool(context.is_killed())}


def _gate_name(step: EngineStep) -> str:
    if step.op == "await_abort":
        return "abort"
    return "kill visible" if step.killed else "stop visible"
