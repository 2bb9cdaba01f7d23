"""How a composed event is written, for ``explain`` and the composed scenarios.

A decode request with its KV transfer (``--machine disagg``) takes the request's
own event slugs (``setup``, ``terminal:stop+tokens``) and the transfer's
(``transfer_started``, ``transfer_completed``, ``transfer_failed``), exactly as
``check --machine disagg`` prints its counterexamples.

N requests on one engine (``--requests N``) address each event: ``rK:EVENT``
is request K's event (1-based: ``r1:setup``, ``r2:terminal:cancelled``) and
``engine:EVENT`` is one of the lifecycle events the engine's owner fires
(``engine:start_called``, ``engine:drain``).  A bare lifecycle slug is read as
``engine:`` too, so the counterexamples of ``check --requests N`` can be pasted
as they are.  ``generate`` and ``abort`` are not written: a request's first step
is its generate, and a step of it that calls abort is the engine's abort.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.disagg import DisaggEvent, TransferEvent
from dynamo_backend_protocol.model.engine import ENGINE_OWN_EVENTS, EngineEvent, RequestMove
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.vocabulary import UnknownEvent, parse_event

_TRANSFER = {ev.value: ev for ev in TransferEvent}
_ENGINE_OWN = {ev.value: ev for ev in ENGINE_OWN_EVENTS}
_FROM_REQUESTS = (LifecycleEvent.GENERATE.value, LifecycleEvent.ABORT.value)


class BadComposedEvent(ProtocolError, ValueError):
    """A token that names no event of the composition."""

    def __init__(self, token: str, reason: str) -> None:
        self.token = token
        self.reason = reason
        super().__init__(f"{token!r}: {reason}")


def parse_disagg_event(token: str) -> DisaggEvent:
    text = token.strip()
    if text in _TRANSFER:
        return _TRANSFER[text]
    try:
        return parse_event(text)
    except UnknownEvent as unknown:
        raise BadComposedEvent(text, f"{unknown}; transfer events: {', '.join(_TRANSFER)}") from None


def disagg_event_name(ev: DisaggEvent) -> str:
    return ev.value if isinstance(ev, TransferEvent) else ev.name


def parse_engine_event(token: str, requests: int) -> EngineEvent:
    text = token.strip()
    who, colon, rest = text.partition(":")
    if who == "engine" and colon:
        return _lifecycle_event(text, rest)
    if text in _ENGINE_OWN or text in _FROM_REQUESTS:
        return _lifecycle_event(text, text)
    if colon and who[:1] == "r" and who[1:].isdigit():
        # No request number has more digits than the count (and int() refuses thousands of them).
        index = int(who[1:]) if len(who) <= 1 + len(str(requests)) else requests + 1
        if not 1 <= index <= requests:
            raise BadComposedEvent(text, f"there is no request {who}: {requests} request(s), r1 to r{requests}")
        try:
            return RequestMove(index - 1, parse_event(rest))
        except UnknownEvent as unknown:
            raise BadComposedEvent(text, str(unknown)) from None
    try:
        parse_event(text)
    except UnknownEvent:
        raise BadComposedEvent(
            text, "write rK:EVENT for request K (r1:setup) or engine:EVENT for the engine (engine:drain)"
        ) from None
    raise BadComposedEvent(text, f"a request event needs its request: write r1:{text}")


def _lifecycle_event(text: str, slug: str) -> LifecycleEvent:
    if slug in _FROM_REQUESTS:
        raise BadComposedEvent(
            text, "generate and abort come from the requests: a request's first step is its generate, "
            "and its step that calls abort is the engine's abort"
        )
    found = _ENGINE_OWN.get(slug)
    if found is None:
        raise BadComposedEvent(text, f"not an engine event; engine events: {', '.join(_ENGINE_OWN)}")
    return found


def engine_event_name(ev: EngineEvent) -> str:
    return ev.name() if isinstance(ev, RequestMove) else f"engine:{ev.value}"
