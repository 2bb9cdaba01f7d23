"""What the interactive protocol page lets a reader play, computed from the model.

The page (``teach``) holds no protocol logic: it only walks the graph built
here.  For each machine (the request machine in one mode, or the engine
lifecycle) this module explores every reachable state and, for each of them,
tells every event: the state it leads to, the actions, the deciding rule, the
guard as it reads in that mode, and the narration sentences; or, for an event
the protocol forbids there, the rule that forbids it.  Pure data, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.reachability import ModeGraph, explore_graph
from dynamo_backend_protocol.model.explore.walk import Walk
from dynamo_backend_protocol.model.lifecycle import ALWAYS as LIFECYCLE_ALWAYS
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent, LifecycleState, lifecycle_step
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import Transition
from dynamo_backend_protocol.model.teach.narrate import STATE_MEANING, narrate_step
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS, Scenario
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, Event, Mode


@dataclass(frozen=True)
class Move:
    """One event told in one state."""

    event: str
    target: int | None
    """Index of the state it leads to; None when the protocol forbids the event here."""
    rules: tuple[str, ...]
    """The deciding (or forbidding) rule first, then the rules the step visibly upholds."""
    actions: tuple[str, ...]
    guard: str | None
    """The deciding row's guard as it reads in this machine; None when it decides nothing here."""
    ignored: bool
    sentences: tuple[str, ...]
    row: object | None
    """The table row that fired, so a drawing can light it up; None when forbidden."""
    source: enum.Enum

    @property
    def forbidden(self) -> bool:
        return self.target is None

    @property
    def rule(self) -> str:
        return self.rules[0]


@dataclass(frozen=True)
class PlayState:
    control: enum.Enum
    variables: dict[str, object]
    """The extended variables a reader watches, by name."""
    meaning: str
    """What the control state means, for a newcomer; may be empty."""
    moves: tuple[Move, ...]
    """One per event of the machine, in the machine's event order."""


@dataclass(frozen=True)
class Playground:
    key: str
    """``agg``, ``decode``, ... or ``lifecycle``."""
    title: str
    mode: Mode | None
    states: tuple[PlayState, ...]
    """The initial state first."""
    scenarios: tuple[Scenario, ...]
    """The teaching scenarios that apply to this machine's mode."""


def request_playground(mode: Mode) -> Playground:
    graph = explore_graph(mode)
    index = {state: number for number, state in enumerate(graph.states)}
    guards = _GuardReader(graph)
    states = tuple(
        PlayState(
            control=state.control,
            variables=_request_variables(state),
            meaning=STATE_MEANING[state.control],
            moves=tuple(_request_move(state, ev, index, guards) for ev in ALL_EVENTS),
        )
        for state in graph.states
    )
    scenarios = tuple(item for item in SCENARIOS if item.applies_to(mode))
    return Playground(mode.value, f"Request protocol, mode {mode.value}", mode, states, scenarios)


class _GuardReader:
    """Guards as the mode's diagram reads them: conditions constant in the mode read away."""

    def __init__(self, graph: ModeGraph) -> None:
        self.graph = graph
        self.cache: dict[tuple[int, enum.Enum], str | None] = {}

    def text(self, row: Transition, source: RequestState) -> str | None:
        key = (id(row), source.control)
        if key not in self.cache:
            self.cache[key] = row.guard.specialised(self.graph.guard_points(row, source.control))
        return self.cache[key]


def _request_variables(state: RequestState) -> dict[str, object]:
    return {
        "first_token": state.first_token,
        "cancel": None if state.cancel is None else state.cancel.value,
        "aborts": state.aborts,
        "ended": None if state.ended is None else state.ended.value,
        "watching": state.watching,
    }


def _request_move(state: RequestState, ev: Event, index: dict[RequestState, int], guards: _GuardReader) -> Move:
    told = narrate_step(state, ev)
    if told.row is None:
        return Move(told.event.name, None, told.rules, (), None, False, told.sentences, None, state.control)
    return Move(
        event=told.event.name,
        target=index[told.after],
        rules=told.rules,
        actions=tuple(action.value for action in told.actions),
        guard=guards.text(told.row, state),
        ignored=told.ignored,
        sentences=told.sentences,
        row=told.row,
        source=state.control,
    )


def lifecycle_playground() -> Playground:
    walk: Walk[LifecycleState, LifecycleEvent] = Walk(LifecycleState())

    def expand(state: LifecycleState) -> Iterator[tuple[LifecycleEvent, LifecycleState, bool]]:
        for event in LifecycleEvent:
            try:
                yield event, lifecycle_step(state, event).after, True
            except ProtocolViolation:
                continue

    walk.run(expand, lambda state: True, max_states=10_000)
    index = {state: number for number, state in enumerate(walk.parent)}
    states = tuple(
        PlayState(
            control=state.phase,
            variables={"start": state.start.value, "cleaned": state.cleaned, "served": state.served},
            meaning="",
            moves=tuple(_lifecycle_move(state, event, index) for event in LifecycleEvent),
        )
        for state in walk.parent
    )
    return Playground("lifecycle", "Engine lifecycle", None, states, ())


def _lifecycle_move(state: LifecycleState, event: LifecycleEvent, index: dict[LifecycleState, int]) -> Move:
    try:
        taken = lifecycle_step(state, event)
    except ProtocolViolation as violation:
        refused = (f"NOT ALLOWED: {violation}.", f"The engine stays in {state.phase.value}.")
        return Move(event.value, None, (violation.rule,), (), None, False, refused, None, state.phase)
    moved = (
        f"The engine stays in {state.phase.value}."
        if taken.after.phase is state.phase
        else f"The engine moves from {state.phase.value} to {taken.after.phase.value}."
    )
    guard = None if taken.row.guard is LIFECYCLE_ALWAYS else taken.row.guard.name
    said = (f"{event.value} in {state.phase.value}.", moved, f"Decided by {taken.rule}: {summary(taken.rule)}.")
    return Move(event.value, index[taken.after], (taken.rule,), (), guard, False, said, taken.row, state.phase)
