"""The request protocol as a transition table.

Every rule that moves a request lives in :data:`REQUEST_TABLE`.  A row says:
in these control states, on this kind of event, when this guard holds, go to
this state, perform these actions, apply these effects, by this rule.  Events
that the protocol forbids in a state are listed in :data:`FORBIDDEN` with the
rule that forbids them.  The machine, the explorer, the diagrams and the
teaching tool all read these two tables; nothing else decides.

Mode-specific behaviour is expressed with guards (``decode``/``not decode``),
never by copying rows per mode.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

from dynamo_backend_protocol.model import guarded
from dynamo_backend_protocol.model.guarded import Row
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import (
    ActionKind,
    ControlState,
    Event,
    EventKind,
    Mode,
)

Condition: TypeAlias = guarded.Condition[RequestState, Event]
Guard: TypeAlias = guarded.Guard[RequestState, Event]
ALWAYS: Guard = guarded.ALWAYS
Transition: TypeAlias = Row[ControlState, EventKind, ActionKind, RequestState, Event]
"""One row of the request table."""

DECODE = Condition("decode", "not decode", lambda s, e: s.mode is Mode.DECODE)
FIRST_TOKEN_SEEN = Condition("first-token seen", "before first-token", lambda s, e: s.first_token)
CANCELLED = Condition("cancelled", "not cancelled", lambda s, e: s.cancel is not None)
CARRIES_TOKENS_NOW = Condition("carries tokens", "no tokens", lambda s, e: e.with_tokens)

NOT_CANCELLED = Guard.of(CANCELLED.fails)
ALREADY_CANCELLED = Guard.of(CANCELLED.holds)
ABORT_NOW = Guard.of((DECODE.fails, FIRST_TOKEN_SEEN.holds))
ABORT_DEFERRED = Guard.of(DECODE.holds, FIRST_TOKEN_SEEN.fails)
CANCELLED_ABORT_NOW = Guard.of(CANCELLED.holds, (DECODE.fails, FIRST_TOKEN_SEEN.holds))
CANCELLED_DEFERRED = Guard.of(CANCELLED.holds, DECODE.holds, FIRST_TOKEN_SEEN.fails)
NOTICE_COUNTS = Guard.of(DECODE.holds, FIRST_TOKEN_SEEN.fails)
NOTICE_IGNORED = Guard.of((DECODE.fails, FIRST_TOKEN_SEEN.holds))
CARRIES_TOKENS = Guard.of(CARRIES_TOKENS_NOW.holds)
NO_TOKENS = Guard.of(CARRIES_TOKENS_NOW.fails)


class Effect(enum.Enum):
    """A named update of the extended variables (derived ones excepted)."""

    START_WATCH = "start watch"
    NOTE_FIRST_TOKEN = "note first-token"
    """Records first-token if the event signals it (a tokenless item does not)."""
    RECORD_CANCEL = "record cancellation"


_I, _S, _CP, _A, _D = (
    ControlState.IDLE,
    ControlState.STREAMING,
    ControlState.CANCEL_PENDING,
    ControlState.ABORTED,
    ControlState.DONE,
)
_FWD = ActionKind.FORWARD_DATA
_ERR = ActionKind.FORWARD_ERROR
_ABORT = ActionKind.CALL_ABORT
_STOP = ActionKind.STOP_READING
_RELEASE = ActionKind.RELEASE_WATCH
_SETUP_ERR = ActionKind.RETURN_SETUP_ERROR

_LIVE = (_S, _CP, _A)
_LIVE_NOT_PENDING = (_S, _A)
_CANCELS = (EventKind.STOP, EventKind.KILL)


def _rows() -> tuple[Transition, ...]:
    rows: list[Transition] = [
        # Setting up the stream.
        Transition((_I,), EventKind.SETUP, NOT_CANCELLED, _S, (), "STREAM-SETUP", (Effect.START_WATCH,)),
        Transition((_I,), EventKind.SETUP, CANCELLED_ABORT_NOW, _A, (_ABORT,), "ABORT-IMMEDIATE",
                   (Effect.START_WATCH,)),
        Transition((_I,), EventKind.SETUP, CANCELLED_DEFERRED, _CP, (), "DECODE-DEFER", (Effect.START_WATCH,)),
        Transition((_I,), EventKind.SETUP_FAILED, ALWAYS, _D, (_SETUP_ERR,), "STREAM-SETUP-FAILURE",
                   ends="setup_failed"),
        # Engine items on a live stream.
        Transition(_LIVE_NOT_PENDING, EventKind.TOKEN_CHUNK, ALWAYS, None, (_FWD,), "STREAM-FORWARD-ORDER",
                   (Effect.NOTE_FIRST_TOKEN,)),
        Transition((_CP,), EventKind.TOKEN_CHUNK, ALWAYS, _A, (_ABORT, _FWD), "DECODE-DEFER",
                   (Effect.NOTE_FIRST_TOKEN,)),
        Transition(_LIVE_NOT_PENDING, EventKind.EMPTY_CHUNK, ALWAYS, None, (_FWD,), "STREAM-FORWARD-ORDER"),
        Transition((_CP,), EventKind.EMPTY_CHUNK, ALWAYS, None, (_FWD,), "DECODE-FIRST-TOKEN"),
        Transition(_LIVE_NOT_PENDING, EventKind.TERMINAL, ALWAYS, _D, (_FWD, _STOP, _RELEASE),
                   "STREAM-TERMINAL-LAST", (Effect.NOTE_FIRST_TOKEN,), ends="terminal"),
        Transition((_CP,), EventKind.TERMINAL, CARRIES_TOKENS, _D, (_ABORT, _FWD, _STOP, _RELEASE), "DECODE-TIE",
                   (Effect.NOTE_FIRST_TOKEN,), ends="terminal"),
        Transition((_CP,), EventKind.TERMINAL, NO_TOKENS, _D, (_FWD, _STOP, _RELEASE), "DECODE-DROP",
                   ends="terminal"),
        Transition(_LIVE_NOT_PENDING, EventKind.ERROR, ALWAYS, _D, (_ERR, _STOP, _RELEASE), "STREAM-TERMINAL-LAST",
                   ends="error"),
        Transition((_CP,), EventKind.ERROR, ALWAYS, _D, (_ERR, _STOP, _RELEASE), "DECODE-DROP", ends="error"),
        Transition(_LIVE_NOT_PENDING, EventKind.END, ALWAYS, _D, (_RELEASE,), "STREAM-END-WITHOUT-TERMINAL",
                   ends="exhausted"),
        Transition((_CP,), EventKind.END, ALWAYS, _D, (_RELEASE,), "DECODE-DROP", ends="exhausted"),
        # The consumer going away.
        Transition(_LIVE_NOT_PENDING, EventKind.DROP, ALWAYS, _D, (_STOP, _RELEASE), "ABORT-NEEDS-CANCEL",
                   ends="dropped"),
        Transition((_CP,), EventKind.DROP, ALWAYS, _D, (_STOP, _RELEASE), "DECODE-DROP", ends="dropped"),
        # Side-channel first-token.
        Transition((_I, _S), EventKind.FIRST_TOKEN_NOTICE, NOTICE_COUNTS, None, (), "DECODE-FIRST-TOKEN",
                   (Effect.NOTE_FIRST_TOKEN,)),
        Transition((_I, _S), EventKind.FIRST_TOKEN_NOTICE, NOTICE_IGNORED, None, (), "DECODE-FIRST-TOKEN",
                   ignored=True),
        Transition((_CP,), EventKind.FIRST_TOKEN_NOTICE, ALWAYS, _A, (_ABORT,), "DECODE-DEFER",
                   (Effect.NOTE_FIRST_TOKEN,)),
        Transition((_A,), EventKind.FIRST_TOKEN_NOTICE, ALWAYS, None, (), "ABORT-ONCE", ignored=True),
    ]
    for cancel in _CANCELS:
        rows += [
            Transition((_I,), cancel, NOT_CANCELLED, None, (), "CANCEL-OBSERVED", (Effect.RECORD_CANCEL,)),
            Transition((_I,), cancel, ALREADY_CANCELLED, None, (), "CANCEL-OBSERVED", ignored=True),
            Transition((_S,), cancel, ABORT_NOW, _A, (_ABORT,), "ABORT-IMMEDIATE", (Effect.RECORD_CANCEL,)),
            Transition((_S,), cancel, ABORT_DEFERRED, _CP, (), "DECODE-DEFER", (Effect.RECORD_CANCEL,)),
            Transition((_CP, _A), cancel, ALWAYS, None, (), "CANCEL-OBSERVED", ignored=True),
        ]
    # A remote client going away: the runtime turns it into a kill on the
    # worker's context, so it is observed exactly like one (and, in decode
    # mode, deferred like one).
    _KILLS = "RUNTIME-DISCONNECT-KILLS"
    rows += [
        Transition((_I,), EventKind.DISCONNECT, NOT_CANCELLED, None, (), _KILLS, (Effect.RECORD_CANCEL,)),
        Transition((_I,), EventKind.DISCONNECT, ALREADY_CANCELLED, None, (), "CANCEL-OBSERVED", ignored=True),
        Transition((_S,), EventKind.DISCONNECT, ABORT_NOW, _A, (_ABORT,), _KILLS, (Effect.RECORD_CANCEL,)),
        Transition((_S,), EventKind.DISCONNECT, ABORT_DEFERRED, _CP, (), _KILLS, (Effect.RECORD_CANCEL,)),
        Transition((_CP, _A), EventKind.DISCONNECT, ALWAYS, None, (), "CANCEL-OBSERVED", ignored=True),
    ]
    # Done is absorbing: what the client or a side channel does afterwards is ignored.
    for kind in (*_CANCELS, EventKind.DISCONNECT, EventKind.FIRST_TOKEN_NOTICE, EventKind.DROP):
        rows.append(Transition((_D,), kind, ALWAYS, None, (), "DONE-ABSORBING", ignored=True))
    return tuple(rows)


REQUEST_TABLE: tuple[Transition, ...] = _rows()


def _forbidden() -> dict[tuple[ControlState, EventKind], str]:
    forbidden: dict[tuple[ControlState, EventKind], str] = {}
    engine_items = (EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL, EventKind.ERROR,
                    EventKind.END)
    for kind in (*engine_items, EventKind.DROP):
        forbidden[(_I, kind)] = "STREAM-EVENT-ORDER"
    for state in (*_LIVE, _D):
        forbidden[(state, EventKind.SETUP)] = "STREAM-EVENT-ORDER"
        forbidden[(state, EventKind.SETUP_FAILED)] = "STREAM-EVENT-ORDER"
    for kind in engine_items:
        forbidden[(_D, kind)] = "STREAM-TERMINAL-LAST"
    return forbidden


FORBIDDEN: dict[tuple[ControlState, EventKind], str] = _forbidden()
"""(state, event kind) pairs the protocol does not allow, with the rule that forbids them."""

