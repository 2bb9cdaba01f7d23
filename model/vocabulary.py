"""The words of the request protocol: modes, control states, events, actions.

Everything here is plain data.  Events are canonical singletons (one object per
distinct event), which lets the machine cache transitions by identity on the
token hot path; :func:`event` and :func:`parse_event` always return the
canonical object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dynamo_backend_protocol.model.errors import BackendError, DynamoError
from dynamo_backend_protocol.model.exceptions import ProtocolError


class Slug(enum.Enum):
    """An enum that reads as its value wherever it is printed."""

    def __str__(self) -> str:
        return str(self.value)


class Mode(Slug):
    """Disaggregation mode of the worker serving the request."""

    AGGREGATED = "agg"
    PREFILL = "prefill"
    DECODE = "decode"
    ENCODE = "encode"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Case-insensitive, whitespace-trimmed; ``aggregated`` aliases ``agg``."""
        slug = text.strip().lower()
        if slug == "aggregated":
            slug = "agg"
        for mode in cls:
            if mode.value == slug:
                return mode
        valid = ", ".join(m.value for m in cls)
        raise DynamoError(
            BackendError.INVALID_ARGUMENT,
            f"unknown disaggregation mode {text!r}; valid values: {valid}",
        )


class ControlState(Slug):
    """Where a request is in its life, as the adapter sees it."""

    IDLE = "Idle"
    """generate was called; the engine's stream does not exist yet."""
    STREAMING = "Streaming"
    """The stream is live and no cancellation has been observed."""
    CANCEL_PENDING = "CancelPending"
    """Decode only: cancellation observed, abort deferred until first-token."""
    ABORTED = "Aborted"
    """engine.abort has been called; the stream may still deliver its terminal."""
    DONE = "Done"
    """The request is over; nothing more is read or forwarded."""


class FinishReason(Slug):
    """Why a stream ended, in Dynamo's vocabulary (its Rust ``FinishReason``)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"
    EOS = "eos"
    CONTENT_FILTER = "content_filter"

    @classmethod
    def parse(cls, text: str) -> FinishReason | None:
        """Dynamo's spelling, or None: exact and case-sensitive; ``abort`` means
        ``cancelled``; ``error: <message>`` is ``error`` (the message is the engine's)."""
        found = _FINISH_REASONS.get(text)
        if found is None and text.startswith(ERROR_MESSAGE_PREFIX):
            return cls.ERROR
        return found

    @classmethod
    def spellings(cls) -> str:
        """Every accepted spelling, for messages that list them."""
        return "eos, stop, length, cancelled (or abort), content_filter, error (or 'error: <message>')"


ERROR_MESSAGE_PREFIX = "error: "
"""How Dynamo writes an error finish reason that carries a message: ``error: out of memory``."""
FINISH_REASON_ALIASES = {"abort": FinishReason.CANCELLED}
"""Other spellings Dynamo parses, with the one meaning each has (vLLM-style engines say ``abort``)."""
_FINISH_REASONS: dict[str, FinishReason] = {reason.value: reason for reason in FinishReason} | FINISH_REASON_ALIASES


class CancelCause(Slug):
    STOP = "stop"
    KILL = "kill"


class StreamEnd(Slug):
    """How the request's stream ended."""

    TERMINAL = "terminal"
    ERROR = "error"
    EXHAUSTED = "exhausted"
    """The engine's stream ended without a terminal item."""
    DROPPED = "dropped"
    """The consumer went away."""
    SETUP_FAILED = "setup_failed"


class EventKind(Slug):
    SETUP = "setup"
    """The engine's stream was set up."""
    SETUP_FAILED = "setup_failed"
    TOKEN_CHUNK = "token_chunk"
    """A non-terminal chunk with at least one token id."""
    EMPTY_CHUNK = "empty_chunk"
    """A non-terminal chunk with no token ids (e.g. SGLang's bootstrap handshake)."""
    TERMINAL = "terminal"
    """A chunk with a finish_reason; carries the reason and whether it has tokens."""
    ERROR = "error"
    """A typed error raised or yielded by the engine's stream."""
    END = "end"
    """The engine's stream ended without a terminal item."""
    STOP = "stop"
    KILL = "kill"
    FIRST_TOKEN_NOTICE = "first_token"
    """The engine called context.notify_first_token() from a side channel."""
    DROP = "drop"
    """The consumer dropped the response stream."""
    DISCONNECT = "disconnect"
    """The remote client went away; the runtime delivers this to the worker as a kill."""


ENGINE_STREAM_KINDS = frozenset(
    {EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL, EventKind.ERROR, EventKind.END}
)
"""Events that come from reading the engine's stream."""


@dataclass(frozen=True, eq=False, slots=True)
class Event:
    """One input to the request machine.  Compare and hash by identity: use
    :func:`event` or :func:`parse_event` to get the canonical instance."""

    kind: EventKind
    finish_reason: FinishReason | None = None
    with_tokens: bool = False

    @property
    def name(self) -> str:
        """Stable slug used in traces, the CLI and counterexamples."""
        if self.kind is EventKind.TERMINAL:
            assert self.finish_reason is not None
            suffix = "+tokens" if self.with_tokens else ""
            return f"terminal:{self.finish_reason.value}{suffix}"
        return str(self.kind)

    @property
    def signals_first_token(self) -> bool:
        """Whether this event is the first-token signal of the decode rules."""
        return (
            self.kind is EventKind.TOKEN_CHUNK
            or self.kind is EventKind.FIRST_TOKEN_NOTICE
            or (self.kind is EventKind.TERMINAL and self.with_tokens)
        )

    @property
    def ends_stream(self) -> bool:
        return self.kind in _STREAM_ENDING_KINDS

    def __repr__(self) -> str:
        return f"Event({self.name})"

    def __str__(self) -> str:
        return self.name


_STREAM_ENDING_KINDS = frozenset(
    {EventKind.TERMINAL, EventKind.ERROR, EventKind.END, EventKind.DROP, EventKind.SETUP_FAILED}
)


def _build_events() -> tuple[Event, ...]:
    events: list[Event] = []
    for kind in EventKind:
        if kind is EventKind.TERMINAL:
            for reason in FinishReason:
                for with_tokens in (False, True):
                    events.append(Event(kind, reason, with_tokens))
        else:
            events.append(Event(kind))
    return tuple(events)


ALL_EVENTS: tuple[Event, ...] = _build_events()
"""Every distinct event, in a fixed order (the explorer's order)."""

_BY_NAME: dict[str, Event] = {e.name: e for e in ALL_EVENTS}
_BY_KEY: dict[tuple[EventKind, FinishReason | None, bool], Event] = {
    (e.kind, e.finish_reason, e.with_tokens): e for e in ALL_EVENTS
}


class UnknownEvent(ProtocolError, ValueError):
    """A name that is not one of the protocol's events."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(
            f"unknown event {text!r}; known events: {', '.join(sorted(e.name for e in ALL_EVENTS))}"
        )


def event(kind: EventKind, finish_reason: FinishReason | None = None, with_tokens: bool = False) -> Event:
    """The canonical event for these fields."""
    if kind is not EventKind.TERMINAL:
        finish_reason, with_tokens = None, False
    elif finish_reason is None:
        raise ValueError("a terminal event needs a finish_reason")
    return _BY_KEY[(kind, finish_reason, with_tokens)]


_BY_NAME.update(
    {
        f"terminal:{alias}{suffix}": _BY_NAME[f"terminal:{reason.value}{suffix}"]
        for alias, reason in FINISH_REASON_ALIASES.items()
        for suffix in ("", "+tokens")
    }
)


def parse_event(text: str) -> Event:
    """Parse an event slug such as ``token_chunk`` or ``terminal:stop+tokens``
    (``terminal:abort`` is ``terminal:cancelled``, as Dynamo reads it)."""
    found = _BY_NAME.get(text.strip())
    if found is None:
        raise UnknownEvent(text)
    return found


class ActionKind(Slug):
    """An output of the request machine, performed by the adapter."""

    FORWARD_DATA = "forward_data"
    FORWARD_ERROR = "forward_error"
    RETURN_SETUP_ERROR = "return_setup_error"
    CALL_ABORT = "call_abort"
    STOP_READING = "stop_reading"
    RELEASE_WATCH = "release_watch"


FORWARDS = frozenset({ActionKind.FORWARD_DATA, ActionKind.FORWARD_ERROR})
