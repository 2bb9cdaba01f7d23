"""What became of a stream after its stop or kill: the protocol's answer, given what was seen of the stream.

Whether an engine honoured a stop (ended 'cancelled', or had finished on its own just before the stop could
act), ignored it (kept streaming, or finished as if nobody had stopped it) or stranded the stream (went silent
and never ended) is a protocol decision, so it lives here and is made once.  The kit's default run reads a
:class:`StoppedStream` off its client and recorder, ``conform --runtime dynamo`` off the engine's side of
Dynamo's real Worker; both ask :func:`classify_stopped`, so both judge a stop the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dynamo_backend_protocol.model.chunks import finish_reason_meaning
from dynamo_backend_protocol.model.vocabulary import FinishReason, Mode


class Ending(enum.Enum):
    """How a stream ended, as its consumer saw it."""

    TERMINAL = "ended with a terminal chunk"
    ERROR_ITEM = "ended with an error item"
    EXHAUSTED = "ended without a terminal chunk"
    DROPPED = "was dropped by the client"
    TIMED_OUT = "did not end in time"
    SETUP_FAILED = "failed at setup"


SHORT_STREAM_MODES = (Mode.PREFILL, Mode.ENCODE)
"""Modes whose whole work is one step (a prefill clamped to its one token, an encode hand-off): a stop
arriving while that step runs may find it already done."""


class AfterStop(enum.Enum):
    """What became of a stream after the client stopped or killed it (and the adapter called abort())."""

    CANCELLED = "ended with a 'cancelled' terminal"
    FINISHED_FIRST = "finished on its own before the stop could act (allowed)"
    FINISHED_AS_IF_NOT_STOPPED = "ended as if nobody had stopped it"
    KEPT_STREAMING = "kept streaming"
    STRANDED = "went silent and never ended"
    OTHER = "ended otherwise"

    @property
    def honoured(self) -> bool:
        """The stop did what a stop must: the stream ended, 'cancelled' or by a finish that was due anyway."""
        return self in (AfterStop.CANCELLED, AfterStop.FINISHED_FIRST)

    @property
    def ignored(self) -> bool:
        """The engine went on as if there had been no stop: a different bug from a stream left silent
        (STRANDED), which waits on something the stop never woke."""
        return self in (AfterStop.KEPT_STREAMING, AfterStop.FINISHED_AS_IF_NOT_STOPPED)


@dataclass(frozen=True)
class StoppedStream:
    """What was seen of a stream once its stop or kill reached the engine: all :func:`classify_stopped` reads.
    Each reader builds it from its own record (the kit's client and recorder, or the engine's side of Dynamo's
    real Worker), so the classification itself is never repeated."""

    ending: Ending
    """How the stream ended (TIMED_OUT: it had not ended by the deadline)."""
    finish_reason: object = None
    """The terminal's finish_reason, when it ended with one."""
    items_after_stop: int = 0
    """Items the engine yielded once the stop showed, the terminal included."""
    at_token_limit: bool = False
    """The stream had already delivered the tokens the request asked for."""
    yielded_since_abort: int | None = None
    """For a stream that had not ended: items yielded since abort() returned (since the stop, with no abort);
    None when nothing of the request reached the engine."""
    abort_hung: bool = False
    """An abort() for the request had not returned."""
    stop_showed: bool = True
    """The stop or kill showed to the engine while its stream was still going; False when the stream had
    already ended (or never began) by then."""


def classify_stopped(stream: StoppedStream, mode: Mode) -> AfterStop:
    """Classify how a stopped stream ended.  A normal terminal that was the very next item after the stop
    is the stream's own finish racing it, allowed when that finish was due anyway: in a short-stream mode,
    or at the request's token limit.  A stream that had ended with a terminal before the stop showed
    finished first, whatever its finish_reason: the stop came too late to owe anything."""
    if not stream.stop_showed:
        ended_whole = stream.ending is Ending.TERMINAL and stream.finish_reason is not None
        return AfterStop.FINISHED_FIRST if ended_whole else AfterStop.OTHER
    if stream.ending is Ending.TERMINAL:
        reason = finish_reason_meaning(stream.finish_reason)
        if reason is FinishReason.CANCELLED:
            return AfterStop.CANCELLED
        if reason is FinishReason.ERROR:
            return AfterStop.OTHER
        due = mode in SHORT_STREAM_MODES or stream.at_token_limit
        return AfterStop.FINISHED_FIRST if stream.items_after_stop <= 1 and due else (
            AfterStop.FINISHED_AS_IF_NOT_STOPPED)
    if stream.ending is not Ending.TIMED_OUT:
        return AfterStop.OTHER
    if stream.yielded_since_abort is None:
        return AfterStop.STRANDED
    # Silent since the abort returned (or since the stop, when the runtime made no abort): stranded.
    return AfterStop.STRANDED if stream.abort_hung or not stream.yielded_since_abort else AfterStop.KEPT_STREAMING
