"""Our adapter's side of a play: the scripted engine behind :class:`EngineAdapter`, in this process.

The client here plays what a client of the real runtime can do, as the
model's runtime rules say it reaches the worker: a stop is
``context.stop_generating()`` and the client receives nothing after it; a
client that leaves is a kill on the worker's context (RUNTIME-DISCONNECT-KILLS)
and receives nothing more.  The adapter's stream is still read to its end,
as the worker's own response stream is.
"""

from __future__ import annotations

from dynamo_backend_protocol.model import DEFAULT_TABLE, BackendError, CompiledTable, DynamoError, Mode
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.bounded import awaited_within
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.differential.compare import outcome_of
from dynamo_backend_protocol.reference.differential.plays import PLANNED_SETUP_ERROR, ClientEnd, Item, Outcome, Play
from dynamo_backend_protocol.reference.differential.scripted_engine import BARRIER_TIMEOUT, Record, ScriptedEngine


def _typed_error(message: str) -> Exception:
    return DynamoError(BackendError.INVALID_ARGUMENT, message)


class ReferenceSide:
    """One scripted engine behind one of our adapters, for one mode."""

    def __init__(self, mode: Mode, table: CompiledTable = DEFAULT_TABLE) -> None:
        self.records: list[Record] = []
        self.engine = ScriptedEngine("differential", self.records.append, _typed_error, mode.value)
        self.adapter = EngineAdapter(self.engine, mode, table=table)

    async def play(self, play: Play) -> Outcome:
        context = Context()
        pending = list(play.client)
        shown = True
        if pending and pending[0].after_items < 0:
            pending.pop(0)
            context.stop_generating()
            shown = False
        items: list[Item] = []
        end: ClientEnd = "no_terminal"
        try:
            stream = await self.adapter.generate(_request(play), context)
        except DynamoError as error:
            return outcome_of(play.name, self.records, (), "setup_error" if PLANNED_SETUP_ERROR in error.message
                              else "error")
        left = False
        while True:
            if shown and pending and pending[0].after_items == len(items):
                step = pending.pop(0)
                shown = False
                if step.op == "disconnect":
                    left, end = True, "left"
                else:
                    context.stop_generating()
                    end = "no_terminal"
            try:
                annotated = await awaited_within(anext(stream), BARRIER_TIMEOUT)
            except StopAsyncIteration:
                break
            if left:
                # The worker hears a client that left when it next sends to it.
                context.kill()
            if not shown:
                continue
            if annotated.error is not None:
                items.append(Item(error=annotated.error.kind.value))
                end = "error"
            else:
                data = annotated.data or {}
                items.append(Item(tuple(data.get("token_ids") or ()), data.get("finish_reason")))
                if data.get("finish_reason") is not None:
                    end = "terminal"
        await awaited_within(self.adapter.settle(), BARRIER_TIMEOUT)
        return outcome_of(play.name, self.records, tuple(items), end)


def _request(play: Play) -> dict[str, object]:
    return {"token_ids": [1, 2], "stop_conditions": {"max_tokens": 8}, "extra_args": {"differential": play.script()}}
