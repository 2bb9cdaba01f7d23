"""Applying the transition table: :func:`CompiledTable.step` and :class:`RequestMachine`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.state import RequestState, initial_state
from dynamo_backend_protocol.model.table import (
    FORBIDDEN,
    REQUEST_TABLE,
    Effect,
    Transition,
    rows_for,
)
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


class ProtocolViolation(Exception):
    """An event arrived that the protocol does not allow in the current state."""

    def __init__(self, state: RequestState, event: Event, rule: str) -> None:
        self.state = state
        self.event = event
        self.rule = rule
        super().__init__(
            f"event {event.name!r} is not allowed in state {state.control.value} "
            f"(rule {rule}: {summary(rule)})"
        )


class TableError(Exception):
    """The table itself is faulty: no row or several rows match a state and event."""

    def __init__(self, state: RequestState, event: Event, problem: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"table {problem} for event {event.name!r} in state {state.describe()}")


@dataclass(frozen=True, slots=True)
class Step:
    """One fired event: where it started, what it did, where it ended, and why."""

    before: RequestState
    event: Event
    after: RequestState
    actions: tuple[ActionKind, ...]
    rule: str
    ignored: bool
    row: Transition

    def as_record(self, request: str) -> dict[str, object]:
        """The JSON Lines trace record of this step."""
        return {
            "request": request,
            "mode": self.before.mode.value,
            "event": self.event.name,
            "state": self.after.control.value,
            "actions": [a.value for a in self.actions],
            "rule": self.rule,
            "ignored": self.ignored,
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
        self._interned: dict[RequestState, RequestState] = {}
        self._rows: dict[tuple[ControlState, EventKind], list[Transition]] = {}
        for state in ControlState:
            for kind in EventKind:
                self._rows[(state, kind)] = rows_for(table, state, kind)

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
        candidates = self._rows[(state.control, ev.kind)]
        matching = [row for row in candidates if row.guard(state, ev)]
        if not matching:
            rule = self.forbidden.get((state.control, ev.kind))
            if rule is not None:
                raise ProtocolViolation(state, ev, rule)
            problem = "has no row" if not candidates else "has no row whose guard holds"
            raise TableError(state, ev, problem)
        if len(matching) > 1:
            names = ", ".join(f"[{row.guard.name}]" for row in matching)
            raise TableError(state, ev, f"has several rows that match ({names})")
        row = matching[0]
        after = self.intern(_apply(state, ev, row))
        actions = FORWARD_ONLY if row.actions == FORWARD_ONLY else row.actions
        return Step(state, ev, after, actions, row.rule, row.ignored, row)


def _apply(state: RequestState, ev: Event, row: Transition) -> RequestState:
    if row.ignored:
        return state
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
