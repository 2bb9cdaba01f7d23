"""A decode request composed with its prefill peer's KV transfer.

In disaggregated serving the decode worker's request starts before its KV
cache has arrived: the prefill worker's blocks are pulled over the network
(NIXL) while the decode engine's stream already exists.  The decode engine
cannot produce a first token before the transfer completed, and an abort
while the transfer is in flight pulls the memory out from under it: the
transfer is *orphaned* (vLLM's engine core crashed on exactly this,
ai-dynamo/dynamo PR #8624).  This module states the transfer as its own
small table and how it synchronises with the request machine:

- the transfer starts once the request's stream exists, and then completes
  or fails;
- a request event that signals first-token is only possible once the
  transfer completed (the first token is computed from the transferred
  cache);
- a step of the request machine that calls abort while the transfer is in
  flight orphans it.

Pure: no I/O, no clocks.  Explored by :mod:`.explore.disagg`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo_backend_protocol.model.invariants import LIVE, Invariant
from dynamo_backend_protocol.model.machine import CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ActionKind, Event, Mode, Slug

NO_ORPHANED_TRANSFER = "DISAGG-NO-ORPHANED-TRANSFER"


class TransferPhase(Slug):
    PENDING = "pending"
    """The decode request exists; its KV cache has not started to arrive."""
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"
    FAILED = "failed"
    ORPHANED = "orphaned"
    """The request was aborted while its cache was still arriving."""


class TransferEvent(Slug):
    STARTED = "transfer_started"
    COMPLETED = "transfer_completed"
    FAILED = "transfer_failed"


@dataclass(frozen=True)
class TransferRow:
    source: TransferPhase
    event: TransferEvent
    target: TransferPhase
    needs_live_request: bool = False
    """The transfer is pulled by the decode engine, so it starts only once the request's stream exists."""


TRANSFER_TABLE: tuple[TransferRow, ...] = (
    TransferRow(TransferPhase.PENDING, TransferEvent.STARTED, TransferPhase.IN_FLIGHT, needs_live_request=True),
    TransferRow(TransferPhase.IN_FLIGHT, TransferEvent.COMPLETED, TransferPhase.COMPLETED),
    TransferRow(TransferPhase.IN_FLIGHT, TransferEvent.FAILED, TransferPhase.FAILED),
)

FIRST_TOKEN_NEEDS = TransferPhase.COMPLETED
"""A request event that signals first-token can only happen in this transfer phase."""

ABORT_ORPHANS = frozenset({TransferPhase.IN_FLIGHT})
"""An abort in these phases orphans the transfer."""


@dataclass(frozen=True, slots=True)
class DisaggState:
    request: RequestState
    transfer: TransferPhase = TransferPhase.PENDING

    def describe(self) -> str:
        return f"{self.request.describe()} transfer={self.transfer.value}"


DisaggEvent = Event | TransferEvent


@dataclass(frozen=True, slots=True)
class DisaggStep:
    before: DisaggState
    event: DisaggEvent
    after: DisaggState
    request_step: Step | None
    """The request machine's step, for a request event; None for a transfer event."""

    @property
    def actions(self) -> tuple[ActionKind, ...]:
        return () if self.request_step is None else self.request_step.actions


class NotEnabled(Exception):
    """The composition does not offer this event here (for example a first token before the cache arrived)."""


def initial_disagg_state(table: CompiledTable) -> DisaggState:
    return DisaggState(table.initial(Mode.DECODE))


def disagg_step(table: CompiledTable, state: DisaggState, ev: DisaggEvent) -> DisaggStep:
    """Fire ``ev``: a transfer event moves the transfer; a request event steps the request
    machine (raising its ProtocolViolation when forbidden) and may orphan the transfer."""
    if isinstance(ev, TransferEvent):
        for row in TRANSFER_TABLE:
            if row.source is state.transfer and row.event is ev:
                if row.needs_live_request and state.request.control not in LIVE:
                    break
                return DisaggStep(state, ev, DisaggState(state.request, row.target), None)
        raise NotEnabled(f"{ev.value} in transfer phase {state.transfer.value}")
    if ev.signals_first_token and state.transfer is not FIRST_TOKEN_NEEDS:
        raise NotEnabled(f"{ev.name} before the KV transfer completed")
    step = table.step(state.request, ev)
    transfer = state.transfer
    if ActionKind.CALL_ABORT in step.actions and transfer in ABORT_ORPHANS:
        transfer = TransferPhase.ORPHANED
    return DisaggStep(state, ev, DisaggState(step.after, transfer), step)


def _never_orphaned(state: DisaggState) -> bool:
    return state.transfer is not TransferPhase.ORPHANED


DISAGG_STATE_INVARIANTS: list[Invariant[DisaggState]] = [
    Invariant(NO_ORPHANED_TRANSFER, "no_transfer_orphaned_by_an_abort", _never_orphaned),
]
