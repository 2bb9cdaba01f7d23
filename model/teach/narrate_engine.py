"""Narration of N requests sharing one engine, composed with the engine lifecycle.

Each event goes through :func:`..engine.engine_step`.  A request's event is
told as one-request narration tells it, and what the engine adds beside it:
its first step is the engine's generate, a step that calls abort is the
engine's abort.  A lifecycle event is told, as every phase machine's step is
(:mod:`.phase_narration`), with the lifecycle row that moved the engine, and
the synchronisation rule (ENGINE-CLEANUP-WAITS) that may hold it back.
Refused events (NotEnabled, ProtocolViolation, ProtocolViolation) are told
with their rule and change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model.engine import (
    CLEANUP_BEGUN,
    CLEANUP_WAITS,
    ENGINE_STATE_INVARIANTS,
    ENGINE_STEP_INVARIANTS,
    Composition,
    EngineEvent,
    EngineState,
    EngineStep,
    RequestMove,
    engine_step,
    in_flight,
    initial_engine_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation
from dynamo_backend_protocol.model.explore.engine import engine_events
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.model.lifecycle import START_FIRST, LifecycleEvent, Phase, lifecycle_table
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.state import RequestState, initial_state
from dynamo_backend_protocol.model.teach.composed_events import engine_event_name
from dynamo_backend_protocol.model.teach.composed_narration import (
    ComposedStep,
    breaks_sentences,
    failing,
    first_of,
    newly_broken,
    outcome_sentences,
    refused_sentences,
    render,
)
from dynamo_backend_protocol.model.teach.narrate import describe_events, event_meaning, narrate_step, rules_sentence
from dynamo_backend_protocol.model.teach.phase_narration import PhaseStory, tell_phase_step
from dynamo_backend_protocol.model.vocabulary import ControlState, Event

PHASE_MEANING: dict[Phase, str] = {
    Phase.CONSTRUCTED: "built; start has not been called",
    Phase.STARTING: "start is running",
    Phase.RUNNING: "serving generate and abort",
    Phase.START_FAILED: "start raised; only cleanup remains",
    Phase.DRAINING: "taking no new request; those in flight finish or are aborted",
    Phase.CLEANING_UP: "cleanup is running",
    Phase.CLEANED_UP: "shut down",
}

_LIFECYCLE_MEANING: dict[LifecycleEvent, str] = {
    LifecycleEvent.START_CALLED: "The Worker calls engine.start().",
    LifecycleEvent.START_OK: "engine.start() returns: the engine is ready.",
    LifecycleEvent.START_RAISED: "engine.start() raises: the engine never became ready.",
    LifecycleEvent.DRAIN: "The Worker calls engine.drain(): no new request from now on.",
    LifecycleEvent.CLEANUP_CALLED: "The Worker calls engine.cleanup() to shut the engine down.",
    LifecycleEvent.CLEANUP_OK: "engine.cleanup() returns.",
    LifecycleEvent.CLEANUP_RAISED: "engine.cleanup() raises.",
}


def _request(request: RequestState) -> str:
    if request == initial_state(request.mode):
        return "not arrived"
    if request.control is ControlState.IDLE and request.cancel is not None:
        return f"Idle, {request.cancel.value} observed"
    return request.control.value


def describe(state: EngineState) -> str:
    requests = ", ".join(f"r{index + 1} {_request(request)}" for index, request in enumerate(state.requests))
    return f"engine {state.lifecycle.phase.value}; {requests}"


def phase_phrase(phase: Phase) -> str:
    return f"{phase.value} ({PHASE_MEANING[phase]})"


def _in_flight_names(state: EngineState) -> list[str]:
    return [f"r{index + 1}" for index, request in enumerate(state.requests) if in_flight(request)]


@dataclass(frozen=True)
class EngineNarration:
    composition: Composition
    initial: EngineState
    steps: tuple[ComposedStep, ...]
    final: EngineState

    def text(self) -> str:
        count = self.composition.requests
        names = ", ".join(f"r{index + 1}" for index in range(count))
        requests = f"{count} request ({names})" if count == 1 else f"{count} requests ({names})"
        opening = [
            f"Mode {self.composition.mode.value}: {requests} sharing one engine with its lifecycle.",
            f"The engine starts in {phase_phrase(self.initial.lifecycle.phase)}; no request has reached it yet "
            "(a request's first step is the engine's generate).",
        ]
        if not self.composition.cleanup_waits_for_requests:
            opening.append(f"This Worker does NOT wait for requests in flight before cleanup (no {CLEANUP_WAITS}).")
        return render(opening, self.steps, [self.conclusion()])

    def conclusion(self) -> str:
        ends = []
        for index, request in enumerate(self.final.requests):
            told = _request(request)
            who = f"r{index + 1}"
            ends.append(f"{who} never reached the engine" if told == "not arrived" else f"{who} ends in {told}")
        phase = self.final.lifecycle.phase.value
        [outcome] = outcome_sentences(self.steps, lambda step: f"{step.event.partition(':')[0]} at ")
        return f"The engine ends in {phase}; {', '.join(ends)}. {outcome}"


def narrate_engine(
    events: Sequence[EngineEvent], composition: Composition, table: CompiledTable = DEFAULT_TABLE
) -> EngineNarration:
    initial = initial_engine_state(table, composition)
    state = initial
    steps: list[ComposedStep] = []
    for number, ev in enumerate(events, start=1):
        told, state = _narrate(table, composition, state, ev, number)
        steps.append(told)
    return EngineNarration(composition, initial, tuple(steps), state)


def _narrate(
    table: CompiledTable, composition: Composition, state: EngineState, ev: EngineEvent, number: int
) -> tuple[ComposedStep, EngineState]:
    try:
        fired = engine_step(table, composition, state, ev)
    except NotEnabled as refusal:
        verdict, rule = "NOT OFFERED", refusal.rule
        why = _not_offered_why(state, ev, rule)
    except ProtocolViolation as violation:
        verdict, rule = "NOT ALLOWED", violation.rule
        why = _forbidden_why(state, ev, rule)
    else:
        if isinstance(ev, RequestMove):
            return _request_step(table, fired, ev, number), fired.after
        return _lifecycle_step(composition, fired, ev, number), fired.after
    return _refused(table, composition, state, ev, number, verdict, why, rule), state


def _forbidden_why(state: EngineState, ev: EngineEvent, rule: str) -> str:
    if isinstance(ev, LifecycleEvent):
        phase = state.lifecycle.phase.value
        return f"the lifecycle forbids {ev.value} in {phase} (rule {rule}: {summary(rule)})."
    request = state.requests[ev.index]
    control = request.control.value
    if request == initial_state(request.mode):
        control += f", where r{ev.index + 1} has not reached the engine yet"
    return f"the protocol forbids {ev.event.name} in {control} (rule {rule}: {summary(rule)})."


def _lifecycle_step(composition: Composition, fired: EngineStep, ev: LifecycleEvent, number: int) -> ComposedStep:
    before, after = fired.before, fired.after
    told = tell_phase_step(lifecycle_table(), before.lifecycle, ev)
    # The composition took the step, so the lifecycle's table allows it.
    assert isinstance(told, PhaseStory)
    rules = [told.rule]
    sentences = [_LIFECYCLE_MEANING[ev], f"Before: {describe(before)}."]
    if not told.moved:
        sentences.append(f"The engine stays in {told.source.value}.")
    else:
        sentences.append(f"The engine moves from {told.source.value} to {phase_phrase(told.target)}.")
    if ev is LifecycleEvent.CLEANUP_CALLED:
        live = _in_flight_names(before)
        if live:
            sentences.append(f"Cleanup begins with {', '.join(live)} still in flight: this Worker does not wait.")
        elif composition.cleanup_waits_for_requests:
            sentences.append("No request is in flight, so cleanup may begin.")
            rules.append(CLEANUP_WAITS)
    broken = newly_broken(ENGINE_STATE_INVARIANTS, before, after) + failing(ENGINE_STEP_INVARIANTS, fired)
    sentences += [f"After: {describe(after)}.", *breaks_sentences(broken), rules_sentence(first_of(rules))]
    return ComposedStep(number, engine_event_name(ev), "the engine", describe(before), describe(after), (),
                        first_of(rules), False, tuple(broken), tuple(sentences))


def _request_step(table: CompiledTable, fired: EngineStep, ev: RequestMove, number: int) -> ComposedStep:
    before, after = fired.before, fired.after
    who = f"r{ev.index + 1}"
    request = before.requests[ev.index]
    told = narrate_step(request, ev.event, number, table)
    rules = list(told.rules)
    sentences = [told.sentences[0], f"Before: {describe(before)}."]
    if _request(request) == "not arrived" and after.requests[ev.index] != request:
        sentences.append(f"This is {who}'s first step, so it is the engine's generate, which a running engine serves.")
        rules.append(START_FIRST)
    sentences += told.sentences[1:-1]
    if fired.calls_abort:
        phase = before.lifecycle.phase
        if phase in CLEANUP_BEGUN:
            sentences.append(f"The abort reaches an engine whose cleanup has begun ({phase.value}).")
        else:
            sentences.append(f"The abort reaches the engine, which serves abort in {phase.value}.")
            rules.append(START_FIRST)
    broken = newly_broken(ENGINE_STATE_INVARIANTS, before, after) + failing(ENGINE_STEP_INVARIANTS, fired)
    assert fired.request_step is not None
    broken += newly_broken(STATE_INVARIANTS, request, after.requests[ev.index])
    broken += failing(STEP_INVARIANTS, fired.request_step)
    sentences += [f"After: {describe(after)}.", *breaks_sentences(broken), rules_sentence(first_of(rules))]
    return ComposedStep(number, ev.name(), f"request {who}", describe(before), describe(after),
                        fired.request_step.actions, first_of(rules), False, tuple(broken), tuple(sentences))


def _not_offered_why(state: EngineState, ev: EngineEvent, rule: str) -> str:
    if isinstance(ev, RequestMove):
        phase = state.lifecycle.phase
        why = (f"this is r{ev.index + 1}'s first step, so it is the engine's generate, and the engine does not "
               f"serve generate in {phase.value} (rule {rule}: {summary(rule)}).")
        if phase is Phase.DRAINING:
            why += " A draining engine takes no new request."
        return why
    live = _in_flight_names(state)
    verb = "is" if len(live) == 1 else "are"
    return f"cleanup waits while {', '.join(live)} {verb} in flight (rule {rule}: {summary(rule)})."


def _refused(
    table: CompiledTable,
    composition: Composition,
    state: EngineState,
    ev: EngineEvent,
    number: int,
    verdict: str,
    why: str,
    rule: str,
) -> ComposedStep:
    if isinstance(ev, RequestMove):
        meaning, actor = event_meaning(ev.event), f"request r{ev.index + 1}"
    else:
        meaning, actor = _LIFECYCLE_MEANING[ev], "the engine"
    stays = "Nothing moves: " + describe(state)
    sentences = [meaning, *refused_sentences(verdict, why, stays, offered(table, composition, state))]
    return ComposedStep(number, engine_event_name(ev), actor, describe(state), describe(state), (), (rule,), True,
                        (), tuple(sentences))


def offered(table: CompiledTable, composition: Composition, state: EngineState) -> str:
    """Every event the composition takes in ``state``, grouped by who it is for."""
    engine: list[str] = []
    requests: list[list[Event]] = [[] for _ in range(composition.requests)]
    for ev in engine_events(composition):
        try:
            engine_step(table, composition, state, ev)
        except (NotEnabled, ProtocolViolation):
            continue
        if isinstance(ev, RequestMove):
            requests[ev.index].append(ev.event)
        else:
            engine.append(ev.value)
    groups = [f"engine: {', '.join(engine)}"] if engine else []
    groups += [f"r{index + 1}: {describe_events(events)}" for index, events in enumerate(requests) if events]
    return "; ".join(groups) or "nothing"


