"""The engine lifecycle as a second, small transition table.

The request machine (:mod:`.table`) governs one request; this machine governs
the engine object as a Worker drives it: construct, ``start``, serve
``generate`` and ``abort``, ``drain``, ``cleanup``.  It has the same shape as
the request model: guarded rows that say where control goes and by which
rule, prohibitions naming the rule that forbids an event in a state,
invariants tagged with ``LIFECYCLE-*`` rule IDs, and a breadth-first
exploration that checks them on every reachable state.

The extended variables (how ``start`` ended, whether a cleanup completed,
whether anything was served) are derived from the events themselves, never
set by a row, so a faulty row cannot hide what happened.  Pure: no I/O, no
clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeAlias

from dynamo_backend_protocol.model import guarded
from dynamo_backend_protocol.model.exceptions import TABLE_WELL_FORMED, ProtocolViolation
from dynamo_backend_protocol.model.guarded import GuardedTable, built_once, event_itself, event_value
from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.vocabulary import Slug

START_FIRST = "LIFECYCLE-START-FIRST"
CLEANUP_AFTER_START = "LIFECYCLE-CLEANUP-AFTER-START"
CLEANUP_IDEMPOTENT = "LIFECYCLE-CLEANUP-IDEMPOTENT"
NO_CLEANUP_WITHOUT_START = "LIFECYCLE-NO-CLEANUP-WITHOUT-START"
LIFECYCLE_TABLE_WELL_FORMED = TABLE_WELL_FORMED


class Phase(Slug):
    """The lifecycle's control states."""

    CONSTRUCTED = "Constructed"
    STARTING = "Starting"
    RUNNING = "Running"
    START_FAILED = "StartFailed"
    DRAINING = "Draining"
    CLEANING_UP = "CleaningUp"
    CLEANED_UP = "CleanedUp"


class StartOutcome(Slug):
    NOT_CALLED = "not_called"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    RAISED = "raised"


class LifecycleEvent(Slug):
    """A call on the engine, or how a call ended."""

    START_CALLED = "start_called"
    START_OK = "start_ok"
    START_RAISED = "start_raised"
    GENERATE = "generate"
    ABORT = "abort"
    DRAIN = "drain"
    CLEANUP_CALLED = "cleanup_called"
    CLEANUP_OK = "cleanup_ok"
    CLEANUP_RAISED = "cleanup_raised"


SERVING_EVENTS = frozenset({LifecycleEvent.GENERATE, LifecycleEvent.ABORT, LifecycleEvent.DRAIN})
CALL_EVENTS = frozenset(
    {LifecycleEvent.START_CALLED, LifecycleEvent.CLEANUP_CALLED, *SERVING_EVENTS}
)
"""Events that are calls (the rest report how a call ended)."""


@dataclass(frozen=True, slots=True)
class LifecycleState:
    phase: Phase = Phase.CONSTRUCTED
    start: StartOutcome = StartOutcome.NOT_CALLED
    cleaned: bool = False
    """A cleanup has completed."""
    served: bool = False
    """generate, abort or drain reached the engine."""

    def describe(self) -> str:
        parts = [self.phase.value, f"start={self.start.value}"]
        if self.cleaned:
            parts.append("cleaned")
        if self.served:
            parts.append("served")
        return " ".join(parts)


LifecycleGuard: TypeAlias = guarded.Guard[LifecycleState, LifecycleEvent]
LifecycleTransition: TypeAlias = guarded.Row[Phase, LifecycleEvent, None, LifecycleState, LifecycleEvent]
"""One row of the lifecycle table: it performs no actions (the engine's calls are its events)."""
Prohibition: TypeAlias = guarded.Prohibition[Phase, LifecycleEvent, LifecycleState, LifecycleEvent]
LifecycleStep: TypeAlias = guarded.Step[LifecycleState, LifecycleEvent, None]

ALWAYS: LifecycleGuard = guarded.ALWAYS
FIRST_CLEANUP_AFTER_START = LifecycleGuard.on_state(
    "first cleanup, start was called", lambda s: not s.cleaned and s.start is not StartOutcome.NOT_CALLED
)
FIRST_CLEANUP_WITHOUT_START = LifecycleGuard.on_state(
    "first cleanup, start never called", lambda s: not s.cleaned and s.start is StartOutcome.NOT_CALLED
)
REPEATED_CLEANUP = LifecycleGuard.on_state("a cleanup already completed", lambda s: s.cleaned)


_C, _S, _R, _F, _D, _CU, _DONE = (
    Phase.CONSTRUCTED,
    Phase.STARTING,
    Phase.RUNNING,
    Phase.START_FAILED,
    Phase.DRAINING,
    Phase.CLEANING_UP,
    Phase.CLEANED_UP,
)
_E = LifecycleEvent

LIFECYCLE_TABLE: tuple[LifecycleTransition, ...] = (
    LifecycleTransition((_C,), _E.START_CALLED, ALWAYS, _S, (), START_FIRST),
    LifecycleTransition((_S,), _E.START_OK, ALWAYS, _R, (), START_FIRST),
    LifecycleTransition((_S,), _E.START_RAISED, ALWAYS, _F, (), CLEANUP_AFTER_START),
    LifecycleTransition((_R,), _E.GENERATE, ALWAYS, None, (), START_FIRST),
    # In-flight requests may still be cancelled while the engine drains.
    LifecycleTransition((_R, _D), _E.ABORT, ALWAYS, None, (), START_FIRST),
    LifecycleTransition((_R,), _E.DRAIN, ALWAYS, _D, (), START_FIRST),
    LifecycleTransition((_R, _D, _F), _E.CLEANUP_CALLED, ALWAYS, _CU, (), CLEANUP_AFTER_START),
    LifecycleTransition((_C,), _E.CLEANUP_CALLED, ALWAYS, _CU, (), NO_CLEANUP_WITHOUT_START),
    LifecycleTransition((_DONE,), _E.CLEANUP_CALLED, ALWAYS, _CU, (), CLEANUP_IDEMPOTENT),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, FIRST_CLEANUP_AFTER_START, _DONE, (), CLEANUP_AFTER_START),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, FIRST_CLEANUP_WITHOUT_START, _DONE, (), NO_CLEANUP_WITHOUT_START),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, REPEATED_CLEANUP, _DONE, (), CLEANUP_IDEMPOTENT),
)


_ALL = tuple(Phase)


def _except(*allowed: Phase) -> tuple[Phase, ...]:
    return tuple(phase for phase in _ALL if phase not in allowed)


LIFECYCLE_FORBIDDEN: tuple[Prohibition, ...] = (
    Prohibition(_except(_C), _E.START_CALLED, START_FIRST),
    Prohibition(_except(_S), _E.START_OK, START_FIRST),
    Prohibition(_except(_S), _E.START_RAISED, START_FIRST),
    Prohibition(_except(_R), _E.GENERATE, START_FIRST),
    Prohibition(_except(_R, _D), _E.ABORT, START_FIRST),
    Prohibition(_except(_R), _E.DRAIN, START_FIRST),
    Prohibition((_S, _CU), _E.CLEANUP_CALLED, CLEANUP_AFTER_START),
    Prohibition(_except(_CU), _E.CLEANUP_OK, CLEANUP_AFTER_START),
    # A cleanup that raises breaks whichever rule promised it would succeed.
    Prohibition((_CU,), _E.CLEANUP_RAISED, CLEANUP_IDEMPOTENT, REPEATED_CLEANUP, then=_DONE),
    Prohibition((_CU,), _E.CLEANUP_RAISED, NO_CLEANUP_WITHOUT_START, FIRST_CLEANUP_WITHOUT_START, then=_DONE),
    Prohibition((_CU,), _E.CLEANUP_RAISED, CLEANUP_AFTER_START, FIRST_CLEANUP_AFTER_START, then=_DONE),
    Prohibition(_except(_CU), _E.CLEANUP_RAISED, CLEANUP_AFTER_START),
)


_START_OUTCOMES = {
    _E.START_CALLED: StartOutcome.PENDING,
    _E.START_OK: StartOutcome.SUCCEEDED,
    _E.START_RAISED: StartOutcome.RAISED,
}


def lifecycle_table(
    rows: tuple[LifecycleTransition, ...] = LIFECYCLE_TABLE, forbidden: tuple[Prohibition, ...] = LIFECYCLE_FORBIDDEN
) -> LifecycleTable:
    """The lifecycle as a guarded table (``rows`` and ``forbidden`` replaceable, so tests can break it)."""
    return _build(rows, forbidden)


LifecycleTable: TypeAlias = GuardedTable[Phase, LifecycleEvent, None, LifecycleState, LifecycleEvent]


@built_once
def _build(rows: tuple[LifecycleTransition, ...], forbidden: tuple[Prohibition, ...]) -> LifecycleTable:
    return GuardedTable(
        "lifecycle",
        rows,
        forbidden,
        phase=_phase,
        trigger=event_itself,
        apply=_apply,
        describe=LifecycleState.describe,
        event_name=event_value,
        with_phase=_with_phase,
    )


def lifecycle_step(
    state: LifecycleState,
    event: LifecycleEvent,
    table: tuple[LifecycleTransition, ...] = LIFECYCLE_TABLE,
    forbidden: tuple[Prohibition, ...] = LIFECYCLE_FORBIDDEN,
) -> LifecycleStep:
    """Fire ``event`` in ``state``; raises :class:`ProtocolViolation` if the lifecycle forbids it."""
    return lifecycle_table(table, forbidden).step(state, event)


def _phase(state: LifecycleState) -> Phase:
    return state.phase


def _with_phase(state: LifecycleState, phase: Phase) -> LifecycleState:
    return replace(state, phase=phase)


def _apply(state: LifecycleState, event: LifecycleEvent, row: LifecycleTransition) -> LifecycleState:
    # Only the phase comes from the row; the rest records what the event was.
    after = replace(state, phase=row.target if row.target is not None else state.phase)
    if event in _START_OUTCOMES:
        after = replace(after, start=_START_OUTCOMES[event])
    if event in SERVING_EVENTS:
        after = replace(after, served=True)
    if event is _E.CLEANUP_OK:
        after = replace(after, cleaned=True)
    return after


class LifecycleMachine:
    """The lifecycle state of one engine.  :meth:`fire` raises on a forbidden event and
    leaves the state unchanged (or, for a forbidden outcome, moves to where the call left
    the engine), so later events are judged from where the engine really is."""

    __slots__ = ("history", "state")

    def __init__(self) -> None:
        self.state = LifecycleState()
        self.history: list[LifecycleStep] = []

    def fire(self, event: LifecycleEvent) -> LifecycleStep:
        try:
            step = lifecycle_step(self.state, event)
        except ProtocolViolation as violation:
            if isinstance(violation.resume, LifecycleState):
                self.state = violation.resume
            raise
        self.state = step.after
        self.history.append(step)
        return step


# --------------------------------------------------------------------------- invariants


LifecycleStateInvariant: TypeAlias = Invariant[LifecycleState]
LifecycleStepInvariant: TypeAlias = Invariant[LifecycleStep]


def _served_only_after_start(state: LifecycleState) -> bool:
    return not state.served or state.start is StartOutcome.SUCCEEDED


def _cleanup_never_overlaps_start(state: LifecycleState) -> bool:
    return state.phase is not Phase.CLEANING_UP or state.start is not StartOutcome.PENDING


def _unstarted_engine_serves_nothing(state: LifecycleState) -> bool:
    if state.start is not StartOutcome.NOT_CALLED:
        return True
    return not state.served and state.phase in (Phase.CONSTRUCTED, Phase.CLEANING_UP, Phase.CLEANED_UP)


def _start_called_once(step: LifecycleStep) -> bool:
    return step.event is not _E.START_CALLED or step.before.start is StartOutcome.NOT_CALLED


def _serving_needs_a_running_engine(step: LifecycleStep) -> bool:
    if step.event not in SERVING_EVENTS:
        return True
    before = step.before
    return before.start is StartOutcome.SUCCEEDED and not before.cleaned and before.phase is not Phase.CLEANING_UP


def _cleanup_starts_when_nothing_else_runs(step: LifecycleStep) -> bool:
    if step.event is not _E.CLEANUP_CALLED:
        return True
    return step.before.phase not in (Phase.STARTING, Phase.CLEANING_UP)


def _cleanup_success_is_final(step: LifecycleStep) -> bool:
    if step.event is not _E.CLEANUP_OK:
        return True
    return step.after.phase is Phase.CLEANED_UP and step.after.cleaned


def _second_cleanup_changes_nothing(step: LifecycleStep) -> bool:
    if step.event is not _E.CLEANUP_OK or not step.before.cleaned:
        return True
    # Idempotent: the engine ends exactly where the first cleanup left it.
    return step.after == replace(step.before, phase=Phase.CLEANED_UP)


def _cleanup_without_start_leaves_it_unstarted(step: LifecycleStep) -> bool:
    if step.before.start is not StartOutcome.NOT_CALLED or step.event is _E.START_CALLED:
        return True
    return step.after.start is StartOutcome.NOT_CALLED and not step.after.served


LIFECYCLE_STATE_INVARIANTS: tuple[LifecycleStateInvariant, ...] = (
    LifecycleStateInvariant(START_FIRST, "served_only_after_start", _served_only_after_start),
    LifecycleStateInvariant(CLEANUP_AFTER_START, "cleanup_never_overlaps_start", _cleanup_never_overlaps_start),
    LifecycleStateInvariant(
        NO_CLEANUP_WITHOUT_START, "unstarted_engine_serves_nothing", _unstarted_engine_serves_nothing
    ),
)
LIFECYCLE_STEP_INVARIANTS: tuple[LifecycleStepInvariant, ...] = (
    LifecycleStepInvariant(START_FIRST, "start_called_once", _start_called_once),
    LifecycleStepInvariant(START_FIRST, "serving_needs_a_running_engine", _serving_needs_a_running_engine),
    LifecycleStepInvariant(
        CLEANUP_AFTER_START, "cleanup_starts_when_nothing_else_runs", _cleanup_starts_when_nothing_else_runs
    ),
    LifecycleStepInvariant(CLEANUP_AFTER_START, "cleanup_success_is_final", _cleanup_success_is_final),
    LifecycleStepInvariant(CLEANUP_IDEMPOTENT, "second_cleanup_changes_nothing", _second_cleanup_changes_nothing),
    LifecycleStepInvariant(
        NO_CLEANUP_WITHOUT_START,
        "cleanup_without_start_leaves_it_unstarted",
        _cleanup_without_start_leaves_it_unstarted,
    ),
)
CLEANUP_REACHABLE = "cleanup_reachable_from_every_state"
"""Graph property, tagged LIFECYCLE-CLEANUP-AFTER-START: shutdown is always possible."""
