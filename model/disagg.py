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

from dataclasses import dataclass, replace
from typing import TypeAlias

from dynamo_backend_protocol.model import guarded
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation
from dynamo_backend_protocol.model.guarded import ALWAYS, GuardedTable, event_itself, event_value, forbid_the_rest
from dynamo_backend_protocol.model.invariants import LIVE, Invariant
from dynamo_backend_protocol.model.liveness import (
    DECODE_WAIT_ENDS,
    DONE_EVENTUALLY,
    ENGINE_PROGRESSES,
    FIRST_TOKEN_OR_END,
    SETUP_RETURNS,
    STREAM_ENDS,
    Fairness,
    LivenessProperty,
    abort_deferred,
    aborted_or_done,
    done,
)
from dynamo_backend_protocol.model.machine import CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ActionKind, Event, Mode, Slug

NO_ORPHANED_TRANSFER = "DISAGG-NO-ORPHANED-TRANSFER"
TRANSFER_ENDS = "DISAGG-TRANSFER-ENDS"


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


TransferRow: TypeAlias = guarded.Row[TransferPhase, TransferEvent, None, DisaggState, TransferEvent]

# The transfer is pulled by the decode engine, so it starts only once the request's stream exists.
REQUEST_STREAM_EXISTS: guarded.Guard[DisaggState, TransferEvent] = guarded.Guard.on_state(
    "the request's stream exists", lambda state: state.request.control in LIVE
)
_P, _T = TransferPhase, TransferEvent

TRANSFER_TABLE: tuple[TransferRow, ...] = (
    TransferRow((_P.PENDING,), _T.STARTED, REQUEST_STREAM_EXISTS, _P.IN_FLIGHT, (), NO_ORPHANED_TRANSFER),
    TransferRow((_P.IN_FLIGHT,), _T.COMPLETED, ALWAYS, _P.COMPLETED, (), TRANSFER_ENDS),
    TransferRow((_P.IN_FLIGHT,), _T.FAILED, ALWAYS, _P.FAILED, (), TRANSFER_ENDS),
)


def _transfer_phase(state: DisaggState) -> TransferPhase:
    return state.transfer


def _move_transfer(state: DisaggState, event: TransferEvent, row: TransferRow) -> DisaggState:
    return state if row.target is None else replace(state, transfer=row.target)


TRANSFER: GuardedTable[TransferPhase, TransferEvent, None, DisaggState, TransferEvent] = GuardedTable(
    "KV transfer",
    TRANSFER_TABLE,
    (
        guarded.Prohibition((_P.PENDING,), _T.STARTED, NO_ORPHANED_TRANSFER),
        *forbid_the_rest(TRANSFER_TABLE, tuple(TransferPhase), tuple(TransferEvent), lambda phase: TRANSFER_ENDS),
    ),
    phase=_transfer_phase,
    trigger=event_itself,
    apply=_move_transfer,
    describe=DisaggState.describe,
    event_name=event_value,
)
"""The KV transfer as a guarded table over the composed state (its guard reads the request)."""


def initial_disagg_state(table: CompiledTable) -> DisaggState:
    return DisaggState(table.initial(Mode.DECODE))


def disagg_step(table: CompiledTable, state: DisaggState, ev: DisaggEvent) -> DisaggStep:
    """Fire ``ev``: a transfer event moves the transfer; a request event steps the request
    machine (raising its ProtocolViolation when forbidden) and may orphan the transfer."""
    if isinstance(ev, TransferEvent):
        try:
            moved = TRANSFER.step(state, ev)
        except ProtocolViolation:
            raise NotEnabled(f"{ev.value} in transfer phase {state.transfer.value}", NO_ORPHANED_TRANSFER) from None
        return DisaggStep(state, ev, moved.after, None)
    if ev.signals_first_token and state.transfer is not FIRST_TOKEN_NEEDS:
        raise NotEnabled(f"{ev.name} before the KV transfer completed", NO_ORPHANED_TRANSFER)
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


# --------------------------------------------------------------------------- liveness

DisaggLiveness = LivenessProperty[DisaggState, DisaggEvent]


def _on_request_events(fairness: Fairness[Event]) -> Fairness[DisaggEvent]:
    return Fairness(fairness.name, fairness.assumes, lambda ev: isinstance(ev, Event) and fairness.covers(ev))


TRANSFER_STARTS: Fairness[DisaggEvent] = Fairness(
    "transfer-starts",
    "once the decode stream exists, the decode engine eventually starts pulling the KV cache",
    lambda ev: ev is TransferEvent.STARTED,
)
TRANSFER_COMPLETES_OR_FAILS: Fairness[DisaggEvent] = Fairness(
    "transfer-completes-or-fails",
    "a KV transfer in flight eventually completes or fails (the network and the prefill peer do not hang forever)",
    lambda ev: ev in (TransferEvent.COMPLETED, TransferEvent.FAILED),
)
DISAGG_FAIRNESS: tuple[Fairness[DisaggEvent], ...] = (TRANSFER_STARTS, TRANSFER_COMPLETES_OR_FAILS)
"""What the composition assumes beyond the request's own fairness (model/liveness.py)."""

_TRANSFER_OVER = frozenset({TransferPhase.COMPLETED, TransferPhase.FAILED, TransferPhase.ORPHANED})


def _lifted(fairness: tuple[Fairness[Event], ...]) -> tuple[Fairness[DisaggEvent], ...]:
    return tuple(map(_on_request_events, fairness))


DISAGG_LIVENESS: tuple[DisaggLiveness, ...] = (
    LivenessProperty(
        DONE_EVENTUALLY, "decode_request_with_transfer_reaches_done", lambda state: True,
        lambda state: done(state.request),
        (*_lifted((SETUP_RETURNS, ENGINE_PROGRESSES, STREAM_ENDS)), *DISAGG_FAIRNESS),
    ),
    LivenessProperty(
        DECODE_WAIT_ENDS, "deferred_abort_with_transfer_fired_or_request_ends",
        lambda state: abort_deferred(state.request), lambda state: aborted_or_done(state.request),
        (*_lifted((ENGINE_PROGRESSES, FIRST_TOKEN_OR_END)), *DISAGG_FAIRNESS),
    ),
    LivenessProperty(
        TRANSFER_ENDS, "transfer_in_flight_eventually_ends",
        lambda state: state.transfer is TransferPhase.IN_FLIGHT, lambda state: state.transfer in _TRANSFER_OVER,
        (TRANSFER_COMPLETES_OR_FAILS,),
    ),
)
"""Liveness of the composition, each with the weak fairness it assumes: the request's own (on its
events) and the transfer's.  Which of them each property needs the explorer finds, as for one request."""
