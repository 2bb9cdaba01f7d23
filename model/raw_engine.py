"""The raw engine adapter (from Dynamo 1.3.1) as a transition table.

A ``RawEngine`` (``DiffusionEngine`` and any non-token engine) takes the
request as a JSON object and yields JSON objects; Dynamo's worker serves it
through a second, raw adapter.  Its protocol is the request machine's with
three things taken away: there are no tokens, so no first-token and no
decode deferral (a stop or kill aborts at once, in every mode); there is no
terminal chunk, so the end of the engine's generator is what ends the
request; and nothing about an item's shape is checked.  Checked against
Dynamo's compiled raw adapter by ``differential --raw`` (spec section 15.2).

Same shape as the lifecycle machine: guarded rows naming their rule, an
event the table has no row for is forbidden, invariants tagged with their
rule IDs judge from the event and the actions, never from the row.  Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeAlias

from dynamo_backend_protocol.model import guarded
from dynamo_backend_protocol.model.guarded import GuardedTable, built_once, event_itself, event_value, forbid_the_rest
from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.vocabulary import Slug

RAW_FORWARD = "RAW-FORWARD"
RAW_END_IS_TERMINAL = "RAW-END-IS-TERMINAL"
RAW_ABORT_IMMEDIATE = "RAW-ABORT-IMMEDIATE"
RAW_DROP = "RAW-DROP"
RAW_SETUP_FAILURE = "RAW-SETUP-FAILURE"

RAW_RULES: tuple[str, ...] = (RAW_FORWARD, RAW_END_IS_TERMINAL, RAW_ABORT_IMMEDIATE, RAW_DROP, RAW_SETUP_FAILURE)


class RawPhase(Slug):
    IDLE = "Idle"
    """generate was called; the engine's generator does not exist yet."""
    STREAMING = "Streaming"
    ABORTED = "Aborted"
    """Cancellation observed and engine.abort called; the generator is still read until it ends."""
    DONE = "Done"


class RawEvent(Slug):
    SETUP = "setup"
    SETUP_FAILED = "setup_failed"
    OBJECT = "object"
    """The engine yielded one JSON object."""
    ERROR = "error"
    """The engine's generator raised (a typed error keeps its kind)."""
    END = "end"
    """The engine's generator ended: the request's terminal."""
    STOP = "stop"
    KILL = "kill"
    DROP = "drop"
    """The worker's response stream went away with no stop or kill."""


class RawAction(Slug):
    CALL_ABORT = "call_abort"
    FORWARD_OBJECT = "forward_object"
    FORWARD_ERROR = "forward_error"
    RETURN_SETUP_ERROR = "return_setup_error"
    STOP_READING = "stop_reading"


CANCELS = frozenset({RawEvent.STOP, RawEvent.KILL})
ENDS_STREAM = frozenset({RawEvent.END, RawEvent.ERROR, RawEvent.DROP, RawEvent.SETUP_FAILED})


@dataclass(frozen=True, slots=True)
class RawState:
    phase: RawPhase = RawPhase.IDLE
    cancelled: bool = False
    """A stop or kill was observed (derived from the events, never set by a row)."""
    aborts: int = 0
    forwarded: int = 0

    def describe(self) -> str:
        parts = [self.phase.value]
        if self.cancelled:
            parts.append("cancelled")
        if self.aborts:
            parts.append(f"aborts={self.aborts}")
        return " ".join(parts)


RawGuard: TypeAlias = guarded.Guard[RawState, RawEvent]
RawTransition: TypeAlias = guarded.Row[RawPhase, RawEvent, RawAction, RawState, RawEvent]
RawStep: TypeAlias = guarded.Step[RawState, RawEvent, RawAction]

ALWAYS: RawGuard = guarded.ALWAYS
NOT_CANCELLED = RawGuard.on_state("no stop or kill yet", lambda s: not s.cancelled)
CANCELLED = RawGuard.on_state("stop or kill observed", lambda s: s.cancelled)


_I, _S, _A, _D = RawPhase.IDLE, RawPhase.STREAMING, RawPhase.ABORTED, RawPhase.DONE
_E = RawEvent
_ABORT = (RawAction.CALL_ABORT,)
_FORWARD = (RawAction.FORWARD_OBJECT,)
_STOP_READING = (RawAction.STOP_READING,)

RAW_TABLE: tuple[RawTransition, ...] = (
    RawTransition((_I,), _E.SETUP, NOT_CANCELLED, _S, (), RAW_FORWARD),
    # Cancelled before the generator existed: aborted as soon as it does (no deferral to wait for).
    RawTransition((_I,), _E.SETUP, CANCELLED, _A, _ABORT, RAW_ABORT_IMMEDIATE),
    RawTransition((_I,), _E.SETUP_FAILED, ALWAYS, _D, (RawAction.RETURN_SETUP_ERROR,), RAW_SETUP_FAILURE),
    RawTransition((_I,), _E.STOP, ALWAYS, None, (), RAW_ABORT_IMMEDIATE),
    RawTransition((_I,), _E.KILL, ALWAYS, None, (), RAW_ABORT_IMMEDIATE),
    RawTransition((_S, _A), _E.OBJECT, ALWAYS, None, _FORWARD, RAW_FORWARD),
    RawTransition((_S, _A), _E.END, ALWAYS, _D, _STOP_READING, RAW_END_IS_TERMINAL),
    RawTransition((_S, _A), _E.ERROR, ALWAYS, _D, (RawAction.FORWARD_ERROR, RawAction.STOP_READING),
                  RAW_END_IS_TERMINAL),
    RawTransition((_S,), _E.STOP, ALWAYS, _A, _ABORT, RAW_ABORT_IMMEDIATE),
    RawTransition((_S,), _E.KILL, ALWAYS, _A, _ABORT, RAW_ABORT_IMMEDIATE),
    # Observed once: a second stop or kill changes nothing.
    RawTransition((_A,), _E.STOP, ALWAYS, None, (), RAW_ABORT_IMMEDIATE),
    RawTransition((_A,), _E.KILL, ALWAYS, None, (), RAW_ABORT_IMMEDIATE),
    RawTransition((_S, _A), _E.DROP, ALWAYS, _D, _STOP_READING, RAW_DROP),
)


def raw_table(rows: tuple[RawTransition, ...] = RAW_TABLE) -> RawTable:
    """The raw adapter as a guarded table: whatever ``rows`` do not allow is forbidden, by
    RAW-END-IS-TERMINAL once the stream ended, else by RAW-FORWARD (``rows`` replaceable,
    so tests can break it)."""
    return _build(rows)


RawTable: TypeAlias = GuardedTable[RawPhase, RawEvent, RawAction, RawState, RawEvent]


@built_once
def _build(rows: tuple[RawTransition, ...]) -> RawTable:
    forbidden = forbid_the_rest(rows, tuple(RawPhase), tuple(RawEvent), _forbidding_rule)
    return GuardedTable(
        "raw", rows, forbidden, phase=_phase, trigger=event_itself, apply=_apply,
        describe=RawState.describe, event_name=event_value,
    )


def raw_step(state: RawState, event: RawEvent, table: tuple[RawTransition, ...] = RAW_TABLE) -> RawStep:
    """Fire ``event`` in ``state``; :class:`~.exceptions.ProtocolViolation` if no row allows it."""
    return raw_table(table).step(state, event)


def _forbidding_rule(phase: RawPhase) -> str:
    return RAW_END_IS_TERMINAL if phase is RawPhase.DONE else RAW_FORWARD


def _phase(state: RawState) -> RawPhase:
    return state.phase


def _apply(state: RawState, event: RawEvent, row: RawTransition) -> RawState:
    # The extended variables are derived from the event and the actions, never set by a row.
    return replace(
        state,
        phase=row.target if row.target is not None else state.phase,
        cancelled=state.cancelled or event in CANCELS,
        aborts=state.aborts + row.actions.count(RawAction.CALL_ABORT),
        forwarded=state.forwarded + row.actions.count(RawAction.FORWARD_OBJECT),
    )


class RawMachine:
    """One raw request.  :meth:`fire` raises on a forbidden event and leaves the state unchanged."""

    __slots__ = ("history", "state", "table")

    def __init__(self, table: tuple[RawTransition, ...] = RAW_TABLE) -> None:
        self.table = table
        self.state = RawState()
        self.history: list[RawStep] = []

    def fire(self, event: RawEvent) -> tuple[RawAction, ...]:
        step = raw_step(self.state, event, self.table)
        self.state = step.after
        self.history.append(step)
        return step.actions


# --------------------------------------------------------------------------- invariants

RawStateInvariant: TypeAlias = Invariant[RawState]
RawStepInvariant: TypeAlias = Invariant[RawStep]


def _abort_at_most_once(state: RawState) -> bool:
    return state.aborts <= 1


def _abort_only_after_cancel(state: RawState) -> bool:
    return state.aborts == 0 or state.cancelled


def _abort_in_the_cancelling_step(step: RawStep) -> bool:
    """A stop or kill on a live stream (or the setup of a cancelled one) aborts in that very step:
    nothing defers it, in any mode."""
    live_cancel = step.event in CANCELS and step.before.phase is RawPhase.STREAMING
    cancelled_setup = step.event is RawEvent.SETUP and step.before.cancelled
    if live_cancel or cancelled_setup:
        return RawAction.CALL_ABORT in step.actions
    return True


def _done_exactly_when_the_stream_ends(step: RawStep) -> bool:
    return (step.after.phase is RawPhase.DONE) == (step.event in ENDS_STREAM or step.before.phase is RawPhase.DONE)


def _every_object_forwarded(step: RawStep) -> bool:
    return (step.event is RawEvent.OBJECT) == (RawAction.FORWARD_OBJECT in step.actions)


def _drop_never_aborts(step: RawStep) -> bool:
    return step.event is not RawEvent.DROP or RawAction.CALL_ABORT not in step.actions


def _setup_failure_returns_its_error(step: RawStep) -> bool:
    if step.event is not RawEvent.SETUP_FAILED:
        return RawAction.RETURN_SETUP_ERROR not in step.actions
    return step.actions == (RawAction.RETURN_SETUP_ERROR,)


RAW_STATE_INVARIANTS: tuple[RawStateInvariant, ...] = (
    RawStateInvariant(RAW_ABORT_IMMEDIATE, "raw_abort_at_most_once", _abort_at_most_once),
    RawStateInvariant(RAW_ABORT_IMMEDIATE, "raw_abort_only_after_cancel", _abort_only_after_cancel),
)
RAW_STEP_INVARIANTS: tuple[RawStepInvariant, ...] = (
    RawStepInvariant(RAW_ABORT_IMMEDIATE, "raw_abort_in_the_cancelling_step", _abort_in_the_cancelling_step),
    RawStepInvariant(RAW_END_IS_TERMINAL, "raw_done_exactly_when_the_stream_ends", _done_exactly_when_the_stream_ends),
    RawStepInvariant(RAW_FORWARD, "raw_every_object_forwarded", _every_object_forwarded),
    RawStepInvariant(RAW_DROP, "raw_drop_never_aborts", _drop_never_aborts),
    RawStepInvariant(RAW_SETUP_FAILURE, "raw_setup_failure_returns_its_error", _setup_failure_returns_its_error),
)
