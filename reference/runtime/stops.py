"""A stopped or killed stream under Dynamo's real Worker, classified as the default run classifies one.

The model's :func:`~dynamo_backend_protocol.model.stopped.classify_stopped` decides what became of a stopped
stream; here its :class:`StoppedStream` is read off the engine's side of the recording (what the
engine yielded once the stop or kill showed, how its stream ended) and the client's tokens.  Dynamo stops
reading a cancelled stream once the engine answers a read with a token, and reads on with no timeout while
the engine is silent: so a stream still open at the end of the run kept streaming if it answered a read the
runtime began after the stop, and was left silent if that read went unanswered.  A stream the runtime stopped
reading before either shows is not judged (None).
"""

from __future__ import annotations

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop, Ending, StoppedStream, classify_stopped
from dynamo_backend_protocol.model.vocabulary import UnknownEvent, parse_event
from dynamo_backend_protocol.reference.runtime.engine_side import EngineRequest
from dynamo_backend_protocol.reference.runtime.probes import ClientRun

_ENDINGS = {"engine.raise": Ending.ERROR_ITEM, "engine.end": Ending.EXHAUSTED, "engine.setup_failed":
            Ending.SETUP_FAILED}
"""How the engine's side ended, in the kit's terms; the runtime closing or cancelling the stream is a drop."""


def after_stop(engine: EngineRequest, client: ClientRun, mode: Mode, max_tokens: int) -> AfterStop | None:
    """What became of a request the client stopped or killed, or None when the run does not show it."""
    ending = engine.ending()
    stop_showed = engine.cancel() is not None
    if not stop_showed and ending is None:
        return None  # the stop or kill never showed, and the stream never ended (or never began)
    if stop_showed and not engine.shows_after_cancel():
        return None  # the runtime stopped reading before the engine showed what it does once stopped
    # The engine's count: the runtime stops forwarding a stopped stream, so the client may not have the last item.
    tokens = max(engine.tokens(), sum(len(item.get("token_ids") or []) for item in client.items))
    stream = StoppedStream(_ending(ending), _finish_reason(ending), engine.items_after_cancel(),
                           tokens >= max_tokens, engine.answers_after_cancel(), stop_showed=stop_showed)
    return classify_stopped(stream, mode)


def _ending(line: dict[str, object] | None) -> Ending:
    if line is None:
        return Ending.TIMED_OUT
    if line["obs"] == "engine.item":
        return Ending.TERMINAL
    return _ENDINGS.get(str(line["obs"]), Ending.DROPPED)


def _finish_reason(line: dict[str, object] | None) -> str | None:
    if line is None or line["obs"] != "engine.item":
        return None
    try:
        reason = parse_event(str(line["item"])).finish_reason
    except UnknownEvent:
        return None
    return reason.value if reason is not None else None
