"""Applying the transition table: :func:`CompiledTable.step` and :class:`RequestMachine`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from dynamo_backend_protocol.model import guarded
from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.guarded import GuardedTable, Prohibition
from dynamo_backend_protocol.model.state import RequestState, initial_state
from dynamo_backend_protocol.model.table import FORBIDDEN, REQUEST_TABLE, Effect, Transition
from dynamo_backend_protocol.model.vocabulary import (
    FORWARDS,
    ActionKind,
    CancelCause,
    ControlState,
    Event,
    EventKind,
    Mode,
    StreamEnd,
)

Step: TypeAlias = guarded.Step[RequestState, Event, ActionKind]
"""One fired event of a request."""


def step_record(step: Step, request: str) -> dict[str, object]:
    """The JSON Lines trace record of ``step``."""
    return {
        "request": request,
        "mode": step.before.mode.value,
        "event": step.event.name,
        "state": step.after.control.value,
        "actions": [a.value for a in step.actions],
        "rule": step.rule,
        "ignored": step.ignored,
    }


FORWARD_ONLY: tuple[ActionKind, ...] = (ActionKind.FORWARD_DATA,)
"""Every step whose only action is forward-data carries this very tuple, so the
adapter's per-token path can recognise it by identity."""

_CANCEL_CAUSE = {
    EventKind.STOP: CancelCause.STOP,
    EventKind.KILL: CancelCause.KILL,
    EventKind.DISCONNECT: CancelCause.KILL,
}


class CompiledTable:
    """A transition table ready to step, with interned states and a step cache.

    Each compiled table owns its states: the cache stored on a state is only
    valid for the table that produced it.
    """

    def __init__(
        self,
        table: tuple[Transition, ...] = REQUEST_TABLE,
        forbidden: dict[tuple[ControlState, EventKind], str] | None = None,
    ) -> None:
        self.table = table
        self.forbidden = FORBIDDEN if forbidden is None else forbidden
        self.guarded: GuardedTable[ControlState, EventKind, ActionKind, RequestState, Event] = GuardedTable(
            "request",
            table,
            tuple(Prohibition((state,), kind, rule) for (state, kind), rule in self.forbidden.items()),
            phase=_control,
            trigger=_kind,
            apply=_apply,
            describe=RequestState.describe,
            event_name=_event_name,
        )
        self._interned: dict[RequestState, RequestState] = {}

    def intern(self, state: RequestState) -> RequestState:
        """This table's own object for ``state``; a state made by another table is
        copied, never adopted, since its step cache holds that table's answers."""
        own = self._interned.get(state)
        if own is None:
            own = state.evolve()
            self._interned[own] = own
        return own

    def initial(self, mode: Mode) -> RequestState:
        return self.intern(initial_state(mode))

    def step(self, state: RequestState, ev: Event) -> Step:
        """Fire ``ev`` in ``state``; raises :class:`ProtocolViolation` if forbidden."""
        state = self.intern(state)
        cached = state.successors.get(ev)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        result = self._compute(state, ev)
        state.successors[ev] = result
        return result

    def _compute(self, state: RequestState, ev: Event) -> Step:
        step = self.guarded.step(state, ev)
        after = self.intern(step.after)
        actions = FORWARD_ONLY if step.actions == FORWARD_ONLY else step.actions
        return guarded.Step(state, ev, after, actions, step.rule, step.ignored, step.row)


def _control(state: RequestState) -> ControlState:
    return state.control


def _kind(ev: Event) -> EventKind:
    return ev.kind


def _event_name(ev: Event) -> str:
    return ev.name


def _apply(state: RequestState, ev: Event, row: Transition) -> RequestState:
    changes: dict[str, object] = {}
    if row.target is not None and row.target is not state.control:
        changes["control"] = row.target
    if Effect.START_WATCH in row.effects:
        changes["watching"] = True
    if Effect.NOTE_FIRST_TOKEN in row.effects and ev.signals_first_token:
        changes["first_token"] = True
    if Effect.RECORD_CANCEL in row.effects and state.cancel is None:
        changes["cancel"] = _CANCEL_CAUSE[ev.kind]
    if row.ends is not None and state.ended is None:
        changes["ended"] = StreamEnd(row.ends)
    # Derived variables follow from what was done, so a faulty row cannot hide it.
    aborts = row.actions.count(ActionKind.CALL_ABORT)
    if aborts:
        changes["aborts"] = state.aborts + aborts
    if any(a in FORWARDS for a in row.actions):
        changes["forwarded"] = True
    if ActionKind.RELEASE_WATCH in row.actions:
        changes["watching"] = False
    if not changes:
        return state
    return state.evolve(**changes)


DEFAULT_TABLE = CompiledTable()


_FORGET: Callable[[Step], object] = id
"""Records nothing: a C builtin, so forgetting a step runs no Python frame."""


class RequestMachine:
    """The protocol state of one request.

    Feed it events with :meth:`fire`; perform the actions it returns.  Every
    fired event is kept in :attr:`history`, in order, unless ``keep_history``
    is off (a long-lived request then holds no memory per event).
    """

    __slots__ = ("_table", "history", "keep_step", "state")

    def __init__(self, mode: Mode, table: CompiledTable = DEFAULT_TABLE, keep_history: bool = True) -> None:
        self._table = table
        self.state = table.initial(mode)
        self.history: list[Step] = []
        self.keep_step: Callable[[Step], object] = self.history.append if keep_history else _FORGET
        """Records one step in the history (or forgets it); for callers that step the table themselves."""

    @property
    def mode(self) -> Mode:
        return self.state.mode

    @property
    def control(self) -> ControlState:
        return self.state.control

    @property
    def over(self) -> bool:
        """The request is Done: nothing more is read, forwarded or fired for it."""
        return self.state.control is ControlState.DONE

    @property
    def keeps_history(self) -> bool:
        return self.keep_step is not _FORGET

    def fire(self, ev: Event) -> tuple[ActionKind, ...]:
        """Apply one event; returns the actions to perform, in order."""
        return self.advance(ev).actions

    def advance(self, ev: Event) -> Step:
        """Apply one event; returns its step."""
        step = self.state.successors.get(ev)
        if step is None:
            step = self._table.step(self.state, ev)
        self.state = step.after
        self.keep_step(step)
        return step

    def allowed(self, ev: Event) -> bool:
        try:
            self._table.step(self.state, ev)
        except ProtocolViolation:
            return False
        return True
