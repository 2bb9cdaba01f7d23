"""The protocol's liveness properties and the fairness each one assumes.

A liveness property says that something good eventually happens: whenever a
run is in a *trigger* state, it later reaches a *goal* state.  A run that
never does is infinite, so it loops; whether such a loop counts depends on
what the environment is assumed to do eventually.  Each assumption is a
weak fairness condition on a class of events: if an event of the class stays
allowed, one of them eventually happens.  Which of its assumptions a property
needs in each mode is not declared but found by the explorer, which drops
each one in turn and shows the loop it lets through; an assumption may be
listed although no mode needs it, to show that it is not enough on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ENGINE_STREAM_KINDS, ControlState, Event, EventKind, Mode

S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True)
class Fairness(Generic[E]):
    """Weak fairness on a class of events: if one of them stays allowed, one eventually happens."""

    name: str
    assumes: str
    """What the environment must eventually do, in one line."""
    covers: Callable[[E], bool]


@dataclass(frozen=True)
class LivenessProperty(Generic[S, E]):
    """From every trigger state, every run that is fair under ``fairness`` reaches a goal state."""

    rule: str
    name: str
    trigger: Callable[[S], bool]
    goal: Callable[[S], bool]
    fairness: tuple[Fairness[E], ...]


_SETUP_KINDS = frozenset({EventKind.SETUP, EventKind.SETUP_FAILED})
_ENGINE_ENDINGS = frozenset({EventKind.TERMINAL, EventKind.ERROR, EventKind.END})

SETUP_RETURNS: Fairness[Event] = Fairness(
    "setup-returns",
    "generate eventually returns the engine's stream or fails",
    lambda ev: ev.kind in _SETUP_KINDS,
)
ENGINE_PROGRESSES: Fairness[Event] = Fairness(
    "engine-progresses",
    "while the stream is live the engine eventually yields, ends or errors, and the client reads what was forwarded",
    lambda ev: ev.kind in ENGINE_STREAM_KINDS,
)
"""Weaker than the two below: a run may take it forever (tokenless chunks, say) and never end."""
STREAM_ENDS: Fairness[Event] = Fairness(
    "stream-ends",
    "the engine's stream eventually ends: a terminal, a typed error or the end of the stream",
    lambda ev: ev.kind in _ENGINE_ENDINGS,
)
FIRST_TOKEN_OR_END: Fairness[Event] = Fairness(
    "first-token-or-end",
    "a deferred decode abort eventually sees a first-token signal or the stream's end (or a drop)",
    lambda ev: ev.signals_first_token or ev.ends_stream,
)

FAIRNESS: tuple[Fairness[Event], ...] = (SETUP_RETURNS, ENGINE_PROGRESSES, STREAM_ENDS, FIRST_TOKEN_OR_END)
"""Every assumption some liveness property makes, in the spec's order."""

_LIVE = frozenset({ControlState.STREAMING, ControlState.CANCEL_PENDING, ControlState.ABORTED})


def done(state: RequestState) -> bool:
    return state.control is ControlState.DONE


def aborted_or_done(state: RequestState) -> bool:
    return state.aborts >= 1 or state.control is ControlState.DONE


def _cancelled_live(state: RequestState) -> bool:
    return state.cancel is not None and state.control in _LIVE


def abort_deferred(state: RequestState) -> bool:
    """Judged from the variables, not the control state: decode, live, cancelled, no first token, no abort."""
    return state.mode is Mode.DECODE and _cancelled_live(state) and not state.first_token and state.aborts == 0


RequestLiveness = LivenessProperty[RequestState, Event]

DONE_EVENTUALLY = "DONE-EVENTUALLY"
ABORT_EVENTUALLY = "ABORT-EVENTUALLY"
DECODE_WAIT_ENDS = "DECODE-WAIT-ENDS"

LIVENESS_PROPERTIES: tuple[RequestLiveness, ...] = (
    LivenessProperty(
        DONE_EVENTUALLY, "every_request_reaches_done", lambda state: True, done,
        (SETUP_RETURNS, ENGINE_PROGRESSES, STREAM_ENDS),
    ),
    LivenessProperty(
        ABORT_EVENTUALLY, "cancelled_live_request_aborted_or_done", _cancelled_live, aborted_or_done,
        (ENGINE_PROGRESSES, FIRST_TOKEN_OR_END),
    ),
    LivenessProperty(
        DECODE_WAIT_ENDS, "deferred_abort_fired_or_request_ends", abort_deferred, aborted_or_done,
        (ENGINE_PROGRESSES, FIRST_TOKEN_OR_END),
    ),
)
