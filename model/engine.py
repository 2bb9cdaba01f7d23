"""N concurrent requests sharing one engine, composed with the engine lifecycle.

Each request is the request machine of :mod:`.table`; the engine is the
lifecycle machine of :mod:`.lifecycle`.  They synchronise where the adapter
calls the engine:

- a request's first step out of its initial state is the engine's
  ``generate`` (the request machine's Idle already means generate was
  called): possible only where the lifecycle serves it (Running); from then
  until Done the request is *in flight*;
- a request step that calls abort is the engine's ``abort``: the request
  machine decides it alone, so it happens wherever the request is, and one
  that reaches an engine whose cleanup began breaks ENGINE-NO-ABORT-AFTER-CLEANUP;
- ``cleanup`` begins only once no request is in flight (ENGINE-CLEANUP-WAITS): the
  protocol notes do not say what a Worker does with requests still streaming
  at shutdown, and this is the model's stated choice.  A composition without
  it (``cleanup_waits_for_requests=False``) is the shutdown race of
  ai-dynamo/dynamo #13993.

The other lifecycle events (start and its outcomes, drain, cleanup and its
outcomes) are the engine's own.  Pure: no I/O, no clocks.  Explored by
:mod:`.explore.engine` (the generic walk) and :mod:`.explore.compiled` (the
compiled, symmetry-reduced one).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation
from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent, LifecycleState, Phase, StartOutcome, lifecycle_step
from dynamo_backend_protocol.model.liveness import (
    DONE_EVENTUALLY,
    ENGINE_PROGRESSES,
    SETUP_RETURNS,
    STREAM_ENDS,
    Fairness,
    LivenessProperty,
    done,
)
from dynamo_backend_protocol.model.machine import CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState, initial_state
from dynamo_backend_protocol.model.vocabulary import ActionKind, ControlState, Event, Mode

CLEANUP_WAITS = "ENGINE-CLEANUP-WAITS"
NO_LIVE_AFTER_CLEANUP = "ENGINE-NO-LIVE-AFTER-CLEANUP"
NO_ABORT_AFTER_CLEANUP = "ENGINE-NO-ABORT-AFTER-CLEANUP"
CLEANUP_EVENTUALLY = "ENGINE-CLEANUP-EVENTUALLY"

ENGINE_OWN_EVENTS: tuple[LifecycleEvent, ...] = tuple(
    event for event in LifecycleEvent if event not in (LifecycleEvent.GENERATE, LifecycleEvent.ABORT)
)
"""Lifecycle events the engine's owner fires; generate and abort come from the requests."""

CLEANUP_BEGUN = frozenset({Phase.CLEANING_UP, Phase.CLEANED_UP})


@dataclass(frozen=True)
class Composition:
    """How the requests and the lifecycle synchronise, beyond the two tables."""

    requests: int = 2
    mode: Mode = Mode.DECODE
    cleanup_waits_for_requests: bool = True
    """ENGINE-CLEANUP-WAITS: cleanup_called only when no request is in flight."""


@dataclass(frozen=True, slots=True)
class RequestMove:
    """Request ``index`` receives ``event``."""

    index: int
    event: Event

    def name(self) -> str:
        return f"r{self.index + 1}:{self.event.name}"


EngineEvent = LifecycleEvent | RequestMove


@dataclass(frozen=True, slots=True)
class EngineState:
    lifecycle: LifecycleState
    requests: tuple[RequestState, ...]

    def describe(self) -> str:
        requests = ", ".join(f"r{i + 1}={r.describe()}" for i, r in enumerate(self.requests))
        return f"engine {self.lifecycle.describe()}; {requests}"


@dataclass(frozen=True, slots=True)
class EngineStep:
    before: EngineState
    event: EngineEvent
    after: EngineState
    request_step: Step | None
    """The request machine's step, for a request event; None for a lifecycle event."""

    @property
    def calls_abort(self) -> bool:
        return self.request_step is not None and ActionKind.CALL_ABORT in self.request_step.actions


def initial_engine_state(table: CompiledTable, composition: Composition) -> EngineState:
    return EngineState(LifecycleState(), (table.initial(composition.mode),) * composition.requests)


def in_flight(request: RequestState) -> bool:
    """generate was called for it (it left its initial state) and it is not Done."""
    return request.control is not ControlState.DONE and request != initial_state(request.mode)


def any_in_flight(requests: tuple[RequestState, ...]) -> bool:
    return any(in_flight(request) for request in requests)


def engine_step(table: CompiledTable, composition: Composition, state: EngineState, ev: EngineEvent) -> EngineStep:
    """Fire ``ev``; raises the request machine's ProtocolViolation, the lifecycle's
    ProtocolViolation, or :class:`NotEnabled` when the composition forbids it."""
    if isinstance(ev, LifecycleEvent):
        waits = composition.cleanup_waits_for_requests
        if ev is LifecycleEvent.CLEANUP_CALLED and waits and any_in_flight(state.requests):
            raise NotEnabled("cleanup while a request is in flight", CLEANUP_WAITS)
        taken = lifecycle_step(state.lifecycle, ev)
        return EngineStep(state, ev, EngineState(taken.after, state.requests), None)
    request = state.requests[ev.index]
    step = table.step(request, ev.event)
    lifecycle = state.lifecycle
    if step.after != request and request == initial_state(composition.mode):
        try:
            lifecycle = lifecycle_step(lifecycle, LifecycleEvent.GENERATE).after
        except ProtocolViolation as violation:
            served = f"{ev.name()}: the engine does not serve generate in {violation.where}"
            raise NotEnabled(served, violation.rule) from None
    if ActionKind.CALL_ABORT in step.actions:
        # Refused or not, the request has called abort; ENGINE-NO-ABORT-AFTER-CLEANUP says when that is wrong.
        with suppress(ProtocolViolation):
            lifecycle = lifecycle_step(lifecycle, LifecycleEvent.ABORT).after
    requests = (*state.requests[: ev.index], step.after, *state.requests[ev.index + 1 :])
    return EngineStep(state, ev, EngineState(lifecycle, requests), step)


def _no_request_in_flight_once_cleanup_begins(state: EngineState) -> bool:
    return state.lifecycle.phase not in CLEANUP_BEGUN or not any_in_flight(state.requests)


def _cleanup_begins_with_no_request_in_flight(step: EngineStep) -> bool:
    return step.event is not LifecycleEvent.CLEANUP_CALLED or not any_in_flight(step.before.requests)


def _no_abort_once_cleanup_begins(step: EngineStep) -> bool:
    return not step.calls_abort or step.before.lifecycle.phase not in CLEANUP_BEGUN


ENGINE_STATE_INVARIANTS: tuple[Invariant[EngineState], ...] = (
    Invariant(
        NO_LIVE_AFTER_CLEANUP, "no_request_in_flight_once_cleanup_begins", _no_request_in_flight_once_cleanup_begins
    ),
)
ENGINE_STEP_INVARIANTS: tuple[Invariant[EngineStep], ...] = (
    Invariant(CLEANUP_WAITS, "cleanup_begins_with_no_request_in_flight", _cleanup_begins_with_no_request_in_flight),
    Invariant(NO_ABORT_AFTER_CLEANUP, "no_abort_once_cleanup_begins", _no_abort_once_cleanup_begins),
)


# --------------------------------------------------------------------------- liveness

EngineLiveness = LivenessProperty[EngineState, EngineEvent]

REQUEST_FAIRNESS: tuple[Fairness[Event], ...] = (SETUP_RETURNS, ENGINE_PROGRESSES, STREAM_ENDS)
"""What one request needs to reach Done (model/liveness.py), assumed of each request on its own events."""

OWNER_CLEANS_UP: Fairness[EngineEvent] = Fairness(
    "owner-cleans-up",
    "when cleanup is allowed and stays allowed, the engine's owner eventually calls it",
    lambda ev: ev is LifecycleEvent.CLEANUP_CALLED,
)


def on_request(index: int, fairness: Fairness[Event]) -> Fairness[EngineEvent]:
    """``fairness`` on the events of request ``index`` alone: each request is fair on its own."""
    return Fairness(
        f"r{index + 1}-{fairness.name}",
        f"request {index + 1}: {fairness.assumes}",
        lambda ev: isinstance(ev, RequestMove) and ev.index == index and fairness.covers(ev.event),
    )


def engine_started(state: LifecycleState) -> bool:
    """start was called and returned, with or without success."""
    return state.start in (StartOutcome.SUCCEEDED, StartOutcome.RAISED)


def cleanup_begun(state: LifecycleState) -> bool:
    return state.phase in CLEANUP_BEGUN


def engine_liveness(composition: Composition) -> tuple[EngineLiveness, ...]:
    """Each request in flight reaches Done (DONE-EVENTUALLY on each request, fair on its own
    events); a started engine's cleanup begins (ENGINE-CLEANUP-EVENTUALLY), given that every
    request is fair and the owner calls cleanup once it is allowed."""
    everyone = tuple(on_request(i, f) for i in range(composition.requests) for f in REQUEST_FAIRNESS)

    def request_done(index: int) -> EngineLiveness:
        return LivenessProperty(
            DONE_EVENTUALLY,
            f"request_{index + 1}_in_flight_reaches_done",
            lambda state: in_flight(state.requests[index]),
            lambda state: done(state.requests[index]),
            tuple(on_request(index, f) for f in REQUEST_FAIRNESS),
        )

    cleanup: EngineLiveness = LivenessProperty(
        CLEANUP_EVENTUALLY,
        "started_engine_cleanup_begins",
        lambda state: engine_started(state.lifecycle),
        lambda state: cleanup_begun(state.lifecycle),
        (*everyone, OWNER_CLEANS_UP),
    )
    return (*(request_done(i) for i in range(composition.requests)), cleanup)
