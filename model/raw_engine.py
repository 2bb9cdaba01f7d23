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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.rules import summary
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


@dataclass(frozen=True)
class RawGuard:
    name: str
    test: Callable[[RawState], bool]

    def __call__(self, state: RawState) -> bool:
        return self.test(state)


ALWAYS = RawGuard("always", lambda s: True)
NOT_CANCELLED = RawGuard("no stop or kill yet", lambda s: not s.cancelled)
CANCELLED = RawGuard("stop or kill observed", lambda s: s.cancelled)


@dataclass(frozen=True)
class RawTransition:
    sources: tuple[RawPhase, ...]
    trigger: RawEvent
    guard: RawGuard
    target: RawPhase | None
    """None: stay."""
    actions: tuple[RawAction, ...]
    rule: str

    def label(self) -> str:
        text = self.trigger.value
        if self.guard is not ALWAYS:
            text += f" [{self.guard.name}]"
        if self.actions:
            text += " / " + ", ".join(action.value for action in self.actions)
        return text


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


class RawViolation(Exception):
    """An event the raw adapter's table has no row for in this state."""

    def __init__(self, state: RawState, event: RawEvent) -> None:
        self.state = state
        self.event = event
        rule = RAW_END_IS_TERMINAL if state.phase is RawPhase.DONE else RAW_FORWARD
        self.rule = rule
        super().__init__(f"{event.value} cannot happen in {state.describe()} (rule {rule}: {summary(rule)})")


class RawTableError(Exception):
    """Several rows match one event in one state."""


@dataclass(frozen=True, slots=True)
class RawStep:
    before: RawState
    event: RawEvent
    actions: tuple[RawAction, ...]
    after: RawState
    rule: str


def raw_step(state: RawState, event: RawEvent, table: tuple[RawTransition, ...] = RAW_TABLE) -> RawStep:
    """Fire ``event`` in ``state``; :class:`RawViolation` if no row allows it."""
    matching = [row for row in table if row.trigger is event and state.phase in row.sources and row.guard(state)]
    if not matching:
        raise RawViolation(state, event)
    if len(matching) > 1:
        raise RawTableError(f"raw table has {len(matching)} rows for {event.value} in {state.describe()}")
    row = matching[0]
    after = replace(
        state,
        phase=row.target if row.target is not None else state.phase,
        cancelled=state.cancelled or event in CANCELS,
        aborts=state.aborts + row.actions.count(RawAction.CALL_ABORT),
        forwarded=state.forwarded + row.actions.count(RawAction.FORWARD_OBJECT),
    )
    return RawStep(state, event, row.actions, after, row.rule)


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
