"""The canonical scenarios of the request protocol, as data.

Each scenario is a short event sequence that teaches one behaviour, with the
modes it applies to and, per mode, how many times the engine's abort must be
called at the end.  Those counts come from the protocol notes and the
upstream tests, not from running the model, so the tests can hold the model to
them.  ``explain`` narrates these; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.vocabulary import Event, Mode, parse_event

_NOT_DECODE = (Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE)
_EVERY_MODE = tuple(Mode)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    """What happens and why it matters, for someone new to the protocol."""
    events: tuple[str, ...]
    """Event slugs, as :func:`parse_event` reads them."""
    aborts: Mapping[Mode, int]
    """The modes the scenario applies to, each with the abort count it must end with."""
    not_applicable: str = ""
    """Why the scenario means nothing in the other modes (shown when one is asked for)."""

    @property
    def modes(self) -> tuple[Mode, ...]:
        return tuple(mode for mode in Mode if mode in self.aborts)

    def applies_to(self, mode: Mode) -> bool:
        return mode in self.aborts

    def parsed_events(self) -> tuple[Event, ...]:
        return tuple(parse_event(name) for name in self.events)


def _same(modes: tuple[Mode, ...], aborts: int) -> dict[Mode, int]:
    return dict.fromkeys(modes, aborts)


_DECODE_ONLY = (
    "It is about decode mode's deferred abort, which no other mode has: elsewhere "
    "abort fires as soon as cancellation is observed."
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="clean-completion",
        title="Clean completion",
        description=(
            "The engine's stream is set up, yields two token chunks and ends with a 'stop' terminal "
            "that carries the last tokens. Every chunk is forwarded in order, reading stops at the "
            "terminal, and engine.abort is never called."
        ),
        events=("setup", "token_chunk", "token_chunk", "terminal:stop+tokens"),
        aborts=_same(_EVERY_MODE, 0),
    ),
    Scenario(
        name="aggregated-cancel",
        title="Cancellation outside decode mode",
        description=(
            "The client stops the request before any token has arrived. Outside decode mode the "
            "adapter calls engine.abort at once; the engine then notices it was stopped and ends its "
            "stream with a 'cancelled' terminal, which is still forwarded to the client."
        ),
        events=("setup", "stop", "terminal:cancelled"),
        aborts=_same(_NOT_DECODE, 1),
        not_applicable=(
            "In decode mode the same events defer the abort, and a stream that then ends without a "
            "token drops it; see decode-deferred-abort and decode-drop-before-first-token."
        ),
    ),
    Scenario(
        name="decode-deferred-abort",
        title="Decode mode defers the abort until first-token",
        description=(
            "A decode request is stopped before it has produced a token. Aborting now could orphan "
            "the prefill worker's in-flight KV transfer, so the abort waits in CancelPending; the "
            "first chunk with tokens releases it, and the engine's 'cancelled' terminal ends the request."
        ),
        events=("setup", "stop", "token_chunk", "terminal:cancelled"),
        aborts={Mode.DECODE: 1},
        not_applicable=_DECODE_ONLY,
    ),
    Scenario(
        name="decode-drop-before-first-token",
        title="Decode request dropped before first-token: no abort",
        description=(
            "A decode request is stopped before its first token, and then the client drops the "
            "response stream. The deferred abort is abandoned: the request ends without engine.abort, "
            "so any per-request cleanup must live inside the engine's own stream."
        ),
        events=("setup", "stop", "drop"),
        aborts={Mode.DECODE: 0},
        not_applicable=_DECODE_ONLY,
    ),
    Scenario(
        name="side-channel-first-token",
        title="A side-channel first-token notice releases the deferred abort",
        description=(
            "A decode request is stopped before any chunk arrives; the abort is deferred. The engine "
            "then reports first-token through context.notify_first_token() (as TRT-LLM does from its "
            "own queue) and the abort fires without waiting for a chunk."
        ),
        events=("setup", "stop", "first_token", "terminal:cancelled"),
        aborts={Mode.DECODE: 1},
        not_applicable=_DECODE_ONLY,
    ),
    Scenario(
        name="side-channel-before-cancel",
        title="First-token noticed before cancellation: abort at once",
        description=(
            "The engine reports first-token from a side channel while generate is still setting up. "
            "When the client stops the request later, first-token is already known, so even in decode "
            "mode the abort fires immediately."
        ),
        events=("first_token", "setup", "stop", "terminal:length"),
        aborts={Mode.DECODE: 1},
        not_applicable=(
            "Outside decode mode the first-token notice is ignored and abort is immediate anyway; "
            "see aggregated-cancel."
        ),
    ),
    Scenario(
        name="tokenless-bootstrap-chunk",
        title="A token-less chunk is not first-token",
        description=(
            "A stopped decode request first yields a chunk with no token ids (SGLang's bootstrap "
            "handshake). It is forwarded, but it does not release the deferred abort; only the next "
            "chunk, which carries tokens, does."
        ),
        events=("setup", "stop", "empty_chunk", "token_chunk", "terminal:cancelled"),
        aborts={Mode.DECODE: 1},
        not_applicable=_DECODE_ONLY,
    ),
    Scenario(
        name="typed-mid-stream-error",
        title="A typed error in the middle of the stream",
        description=(
            "After one token the engine's stream raises a typed error (say BackendInvalidArgument). "
            "It is forwarded as an error item with its kind intact, reading stops, and nothing can "
            "follow it."
        ),
        events=("setup", "token_chunk", "error"),
        aborts=_same(_EVERY_MODE, 0),
    ),
    Scenario(
        name="setup-failure",
        title="generate fails before a stream exists",
        description=(
            "The engine's generate fails while setting up. The error is returned to the caller as it "
            "is; there is no stream to read, nothing to watch and nothing to abort."
        ),
        events=("setup_failed",),
        aborts=_same(_EVERY_MODE, 0),
    ),
    Scenario(
        name="kill",
        title="Kill, then a late stop",
        description=(
            "The request is killed after its first token. A kill counts as a stop: abort fires once, "
            "in every mode (first-token is already known in decode). A stop arriving afterwards "
            "changes nothing, and the engine's 'cancelled' terminal is forwarded."
        ),
        events=("setup", "token_chunk", "kill", "stop", "terminal:cancelled"),
        aborts=_same(_EVERY_MODE, 1),
    ),
    Scenario(
        name="first-token-and-drop-same-step",
        title="First-token and stream end in the same step: abort",
        description=(
            "A stopped decode request's very first item is a terminal that carries tokens (say a "
            "one-token request ending with 'length'). That single item is both the first-token signal "
            "and the end of the stream. First-token wins the tie: the request did reach the abortable "
            "state, so abort fires once before the request ends."
        ),
        events=("setup", "stop", "terminal:length+tokens"),
        aborts={Mode.DECODE: 1},
        not_applicable=_DECODE_ONLY,
    ),
    Scenario(
        name="cancel-before-setup",
        title="Cancelled while generate is still setting up",
        description=(
            "The client stops the request before the engine's stream exists. The stop is remembered; "
            "as soon as the stream is set up, the abort fires (or, in decode mode, is deferred until "
            "first-token). Here the engine then ends with a token-less 'cancelled' terminal."
        ),
        events=("stop", "setup", "terminal:cancelled"),
        aborts={Mode.AGGREGATED: 1, Mode.PREFILL: 1, Mode.ENCODE: 1, Mode.DECODE: 0},
    ),
    Scenario(
        name="silent-drop",
        title="The client goes away without stop or kill",
        description=(
            "After one token the response stream is dropped without any cancellation. Abort is only "
            "for stop and kill, so it is not called; the engine's stream is simply no longer read."
        ),
        events=("setup", "token_chunk", "drop"),
        aborts=_same(_EVERY_MODE, 0),
    ),
    Scenario(
        name="stream-ends-without-terminal",
        title="The engine's stream ends without a terminal",
        description=(
            "The engine's stream runs out after one token without a terminal item. The request ends; "
            "the adapter invents no terminal for it (catching such engines is the conformance kit's job)."
        ),
        events=("setup", "token_chunk", "end"),
        aborts=_same(_EVERY_MODE, 0),
    ),
)

_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


class UnknownScenario(ProtocolError, KeyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown scenario {self.name!r}; known scenarios: {', '.join(_BY_NAME)}"


def scenario(name: str) -> Scenario:
    found = _BY_NAME.get(name.strip().lower())
    if found is None:
        raise UnknownScenario(name)
    return found
