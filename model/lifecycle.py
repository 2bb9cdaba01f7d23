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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.vocabulary import Slug

START_FIRST = "LIFECYCLE-START-FIRST"
CLEANUP_AFTER_START = "LIFECYCLE-CLEANUP-AFTER-START"
CLEANUP_IDEMPOTENT = "LIFECYCLE-CLEANUP-IDEMPOTENT"
NO_CLEANUP_WITHOUT_START = "LIFECYCLE-NO-CLEANUP-WITHOUT-START"
LIFECYCLE_TABLE_WELL_FORMED = "TABLE-WELL-FORMED"


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


@dataclass(frozen=True)
class LifecycleGuard:
    name: str
    test: Callable[[LifecycleState], bool]

    def __call__(self, state: LifecycleState) -> bool:
        return self.test(state)


ALWAYS = LifecycleGuard("always", lambda s: True)
FIRST_CLEANUP_AFTER_START = LifecycleGuard(
    "first cleanup, start was called", lambda s: not s.cleaned and s.start is not StartOutcome.NOT_CALLED
)
FIRST_CLEANUP_WITHOUT_START = LifecycleGuard(
    "first cleanup, start never called", lambda s: not s.cleaned and s.start is StartOutcome.NOT_CALLED
)
REPEATED_CLEANUP = LifecycleGuard("a cleanup already completed", lambda s: s.cleaned)


@dataclass(frozen=True)
class LifecycleTransition:
    sources: tuple[Phase, ...]
    trigger: LifecycleEvent
    guard: LifecycleGuard
    target: Phase | None
    """None means: stay in the source phase."""
    rule: str

    def label(self) -> str:
        text = self.trigger.value
        if self.guard is not ALWAYS:
            text += f" [{self.guard.name}]"
        return text


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
    LifecycleTransition((_C,), _E.START_CALLED, ALWAYS, _S, START_FIRST),
    LifecycleTransition((_S,), _E.START_OK, ALWAYS, _R, START_FIRST),
    LifecycleTransition((_S,), _E.START_RAISED, ALWAYS, _F, CLEANUP_AFTER_START),
    LifecycleTransition((_R,), _E.GENERATE, ALWAYS, None, START_FIRST),
    # In-flight requests may still be cancelled while the engine drains.
    LifecycleTransition((_R, _D), _E.ABORT, ALWAYS, None, START_FIRST),
    LifecycleTransition((_R,), _E.DRAIN, ALWAYS, _D, START_FIRST),
    LifecycleTransition((_R, _D, _F), _E.CLEANUP_CALLED, ALWAYS, _CU, CLEANUP_AFTER_START),
    LifecycleTransition((_C,), _E.CLEANUP_CALLED, ALWAYS, _CU, NO_CLEANUP_WITHOUT_START),
    LifecycleTransition((_DONE,), _E.CLEANUP_CALLED, ALWAYS, _CU, CLEANUP_IDEMPOTENT),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, FIRST_CLEANUP_AFTER_START, _DONE, CLEANUP_AFTER_START),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, FIRST_CLEANUP_WITHOUT_START, _DONE, NO_CLEANUP_WITHOUT_START),
    LifecycleTransition((_CU,), _E.CLEANUP_OK, REPEATED_CLEANUP, _DONE, CLEANUP_IDEMPOTENT),
)


@dataclass(frozen=True)
class Prohibition:
    """An event the lifecycle forbids in these phases (when the guard holds), and the rule that forbids it."""

    sources: tuple[Phase, ...]
    trigger: LifecycleEvent
    guard: LifecycleGuard
    rule: str
    then: Phase | None = None
    """For a forbidden *outcome*: the call is over all the same, so a monitor that keeps
    watching continues from this phase (a cleanup that raised has still ended)."""


_ALL = tuple(Phase)


def _except(*allowed: Phase) -> tuple[Phase, ...]:
    return tuple(phase for phase in _ALL if phase not in allowed)


LIFECYCLE_FORBIDDEN: tuple[Prohibition, ...] = (
    Prohibition(_except(_C), _E.START_CALLED, ALWAYS, START_FIRST),
    Prohibition(_except(_S), _E.START_OK, ALWAYS, START_FIRST),
    Prohibition(_except(_S), _E.START_RAISED, ALWAYS, START_FIRST),
    Prohibition(_except(_R), _E.GENERATE, ALWAYS, START_FIRST),
    Prohibition(_except(_R, _D), _E.ABORT, ALWAYS, START_FIRST),
    Prohibition(_except(_R), _E.DRAIN, ALWAYS, START_FIRST),
    Prohibition((_S, _CU), _E.CLEANUP_CALLED, ALWAYS, CLEANUP_AFTER_START),
    Prohibition(_except(_CU), _E.CLEANUP_OK, ALWAYS, CLEANUP_AFTER_START),
    # A cleanup that raises breaks whichever rule promised it would succeed.
    Prohibition((_CU,), _E.CLEANUP_RAISED, REPEATED_CLEANUP, CLEANUP_IDEMPOTENT, then=_DONE),
    Prohibition((_CU,), _E.CLEANUP_RAISED, FIRST_CLEANUP_WITHOUT_START, NO_CLEANUP_WITHOUT_START, then=_DONE),
    Prohibition((_CU,), _E.CLEANUP_RAISED, FIRST_CLEANUP_AFTER_START, CLEANUP_AFTER_START, then=_DONE),
    Prohibition(_except(_CU), _E.CLEANUP_RAISED, ALWAYS, CLEANUP_AFTER_START),
)


class LifecycleViolation(Exception):
    """An engine call (or outcome) the lifecycle does not allow in the current state."""

    def __init__(
        self, state: LifecycleState, event: LifecycleEvent, rule: str, resume: LifecycleState | None = None
    ) -> None:
        self.state = state
        self.event = event
        self.rule = rule
        self.resume = resume
        """Where a monitor continues from, if the prohibition says (else: unchanged)."""
        super().__init__(f"{event.value} is not allowed in {state.phase.value} (rule {rule}: {summary(rule)})")


class LifecycleTableError(Exception):
    """The lifecycle table itself is faulty: no row, or several rows, match."""


@dataclass(frozen=True, slots=True)
class LifecycleStep:
    before: LifecycleState
    event: LifecycleEvent
    after: LifecycleState
    rule: str
    row: LifecycleTransition


_START_OUTCOMES = {
    _E.START_CALLED: StartOutcome.PENDING,
    _E.START_OK: StartOutcome.SUCCEEDED,
    _E.START_RAISED: StartOutcome.RAISED,
}


def lifecycle_step(
    state: LifecycleState,
    event: LifecycleEvent,
    table: tuple[LifecycleTransition, ...] = LIFECYCLE_TABLE,
    forbidden: tuple[Prohibition, ...] = LIFECYCLE_FORBIDDEN,
) -> LifecycleStep:
    """Fire ``event`` in ``state``; raises :class:`LifecycleViolation` if the lifecycle forbids it."""
    candidates = [row for row in table if row.trigger is event and state.phase in row.sources]
    matching = [row for row in candidates if row.guard(state)]
    if not matching:
        for prohibition in forbidden:
            if prohibition.trigger is event and state.phase in prohibition.sources and prohibition.guard(state):
                resume = None if prohibition.then is None else replace(state, phase=prohibition.then)
                raise LifecycleViolation(state, event, prohibition.rule, resume)
        problem = "has no row" if not candidates else "has no row whose guard holds"
        raise LifecycleTableError(f"lifecycle table {problem} for {event.value} in {state.describe()}")
    if len(matching) > 1:
        names = ", ".join(f"[{row.guard.name}]" for row in matching)
        raise LifecycleTableError(f"lifecycle table has several rows for {event.value} in {state.describe()}: {names}")
    row = matching[0]
    return LifecycleStep(state, event, _apply(state, event, row), row.rule, row)


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
        except LifecycleViolation as violation:
            if violation.resume is not None:
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
