"""The conformance checks as data: each failure name, what passing means, and what it needs first.

The first thirteen are the upstream kit's checks, with its failure names;
the rest are checks upstream lacks, run through the reference adapter.  A
check whose prerequisite did not pass is skipped, naming the failure to fix
first, rather than reported on an engine that cannot be judged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dynamo_backend_protocol.model import Mode


class Failure(enum.StrEnum):
    """The name a check fails with."""

    START_FAILED = "StartFailed"
    EMPTY_MODEL_IN_CONFIG = "EmptyModelInConfig"
    GENERATE_FAILED = "GenerateFailed"
    NO_CHUNKS_YIELDED = "NoChunksYielded"
    STREAM_YIELDED_ERROR = "StreamYieldedError"
    CHUNK_AFTER_TERMINAL = "ChunkAfterTerminal"
    NO_TERMINAL_CHUNK = "NoTerminalChunk"
    CONCURRENT_GENERATE_FAILED = "ConcurrentGenerateFailed"
    CANCELLATION_NOT_OBSERVED = "CancellationNotObserved"
    CANCELLATION_IGNORED = "CancellationIgnored"
    CLEANUP_FAILED = "CleanupFailed"
    SECOND_CLEANUP_FAILED = "SecondCleanupFailed"
    CLEANUP_WITHOUT_START_FAILED = "CleanupWithoutStartFailed"
    KV_EVENT_SOURCES_FAILED = "KvEventSourcesFailed"
    KV_EVENT_SOURCES_NOT_IDEMPOTENT = "KvEventSourcesNotIdempotent"
    COMPLETION_TOKENS_MISMATCH = "CompletionTokensMismatch"
    ENCODE_CHUNK_COUNT = "EncodeChunkCount"
    ENCODE_TERMINAL_EXPECTED = "EncodeTerminalExpected"
    ENCODE_TOKENS_NOT_EMPTY = "EncodeTokensNotEmpty"
    ENCODE_USAGE_MISMATCH = "EncodeUsageMismatch"
    ENCODER_RESULT_EXPECTED_OBJECT = "EncoderResultExpectedObject"
    MALFORMED_CHUNK = "MalformedChunk"
    ABORTED_STREAM_NOT_ENDED = "AbortedStreamNotEnded"
    KILL_NOT_HANDLED_LIKE_STOP = "KillNotHandledLikeStop"
    ABORT_CALLED_TWICE = "AbortCalledTwice"
    ABORT_ON_CLEAN_COMPLETION = "AbortOnCleanCompletion"
    ABORT_BEFORE_FIRST_TOKEN = "AbortBeforeFirstToken"
    DROPPED_STREAM_NOT_CLOSED = "DroppedStreamNotClosed"
    LIFECYCLE_ORDER_VIOLATED = "LifecycleOrderViolated"
    ABORT_FAILED = "AbortFailed"
    CANCELLATION_LEAKED = "CancellationLeaked"
    MID_STREAM_CANCELLATION_IGNORED = "MidStreamCancellationIgnored"
    SCHEDULE_FAILED = "ScheduleFailed"
    ABORT_AFTER_TERMINAL_RAISED = "AbortAfterTerminalRaised"


@dataclass(frozen=True)
class CheckSpec:
    failure: Failure
    title: str
    """What passing means, in a few words."""
    requires: tuple[Failure, ...] = ()
    only_in: Mode | None = None
    """The one mode the check applies to; elsewhere it is skipped as not applicable."""
    not_in: Mode | None = None
    """The one mode the check does not apply to."""
    needs_hook: str | None = None
    """An optional engine method the check exercises; an engine without it is not judged."""
    upstream: bool = False
    """Whether upstream's conformance kit has this check (same failure name)."""


F = Failure
_SINGLE_STREAM_OK = (F.CHUNK_AFTER_TERMINAL, F.NO_TERMINAL_CHUNK)
_ENCODE_TERMINAL = (F.NO_TERMINAL_CHUNK,)
ENCODE_SUITE = (
    F.ENCODE_CHUNK_COUNT,
    F.ENCODE_TERMINAL_EXPECTED,
    F.ENCODE_TOKENS_NOT_EMPTY,
    F.ENCODE_USAGE_MISMATCH,
    F.ENCODER_RESULT_EXPECTED_OBJECT,
)
"""Upstream's encode suite, judged in encode mode only."""
_WELL_FORMED_AND_CANCELLABLE = (F.MALFORMED_CHUNK, F.CANCELLATION_IGNORED, F.ABORT_FAILED)
"""Checks that stop requests through the adapter, which calls abort: an abort that raises or hangs is
AbortFailed's to report, once, not every such check's."""

CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(F.START_FAILED, "start succeeds", upstream=True),
    CheckSpec(
        F.EMPTY_MODEL_IN_CONFIG, "start returns a config with a non-empty model", (F.START_FAILED,), upstream=True
    ),
    CheckSpec(F.GENERATE_FAILED, "generate sets up a stream", (F.START_FAILED,), upstream=True),
    CheckSpec(F.NO_CHUNKS_YIELDED, "the stream yields items", (F.GENERATE_FAILED,), upstream=True),
    CheckSpec(F.STREAM_YIELDED_ERROR, "every item is a chunk, not an error", (F.NO_CHUNKS_YIELDED,), upstream=True),
    CheckSpec(F.CHUNK_AFTER_TERMINAL, "nothing follows the terminal chunk", (F.STREAM_YIELDED_ERROR,), upstream=True),
    CheckSpec(F.NO_TERMINAL_CHUNK, "the stream ends with a terminal chunk", (F.STREAM_YIELDED_ERROR,), upstream=True),
    # In encode mode each of them must be a well-formed hand-off, so the encode checks come first.
    CheckSpec(
        F.CONCURRENT_GENERATE_FAILED, "8 interleaved requests all complete", (*_SINGLE_STREAM_OK, *ENCODE_SUITE),
        upstream=True,
    ),
    CheckSpec(
        F.CANCELLATION_NOT_OBSERVED, "a stream stopped once live ends within the deadline", _SINGLE_STREAM_OK,
        upstream=True,
    ),
    CheckSpec(
        F.CANCELLATION_IGNORED, "a stopped stream ends with a 'cancelled' terminal", (F.CANCELLATION_NOT_OBSERVED,),
        upstream=True,
    ),
    # Cleanup is judged after start whatever start did: a start that raised still gets its cleanup.
    CheckSpec(F.CLEANUP_FAILED, "cleanup succeeds after start", upstream=True),
    CheckSpec(F.SECOND_CLEANUP_FAILED, "a second cleanup succeeds", (F.CLEANUP_FAILED,), upstream=True),
    CheckSpec(F.CLEANUP_WITHOUT_START_FAILED, "cleanup succeeds on a never-started engine", upstream=True),
    CheckSpec(
        F.KV_EVENT_SOURCES_FAILED, "kv_event_sources() succeeds, twice", (F.START_FAILED,), upstream=True,
        needs_hook="kv_event_sources",
    ),
    CheckSpec(
        F.KV_EVENT_SOURCES_NOT_IDEMPOTENT, "kv_event_sources() gives the same dp ranks each time",
        (F.KV_EVENT_SOURCES_FAILED,), upstream=True, needs_hook="kv_event_sources",
    ),
    CheckSpec(
        F.COMPLETION_TOKENS_MISMATCH, "a terminal's completion_tokens counts the tokens streamed", _SINGLE_STREAM_OK,
        not_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_CHUNK_COUNT, "encode: the stream is exactly one terminal chunk", (F.STREAM_YIELDED_ERROR,),
        only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_TERMINAL_EXPECTED, "encode: the terminal's finish_reason is 'stop'", _ENCODE_TERMINAL,
        only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_TOKENS_NOT_EMPTY, "encode: the terminal carries no token ids", _ENCODE_TERMINAL,
        only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_USAGE_MISMATCH, "encode: usage, if any, is the prompt and zero completion tokens", _ENCODE_TERMINAL,
        only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODER_RESULT_EXPECTED_OBJECT, "encode: the terminal carries an encoder_result object", _ENCODE_TERMINAL,
        only_in=Mode.ENCODE, upstream=True,
    ),
    # In encode mode a missing hand-off is upstream's EncoderResultExpectedObject first.
    CheckSpec(
        F.MALFORMED_CHUNK, "every chunk is well-formed for the mode",
        (*_SINGLE_STREAM_OK, F.ENCODER_RESULT_EXPECTED_OBJECT),
    ),
    # Upstream's kit never calls abort; the runtime does, right as it stops a request.
    CheckSpec(
        F.ABORT_FAILED, "abort(context) of a stopped request returns within the deadline, without raising",
        (F.CANCELLATION_IGNORED,), needs_hook="abort",
    ),
    CheckSpec(
        F.ABORTED_STREAM_NOT_ENDED, "a stream stopped through the adapter (so aborted) still ends with 'cancelled'",
        _WELL_FORMED_AND_CANCELLABLE,
    ),
    CheckSpec(F.KILL_NOT_HANDLED_LIKE_STOP, "a killed stream ends like a stopped one", (F.ABORTED_STREAM_NOT_ENDED,)),
    CheckSpec(F.ABORT_CALLED_TWICE, "abort reaches the engine at most once per request", _WELL_FORMED_AND_CANCELLABLE),
    CheckSpec(F.ABORT_ON_CLEAN_COMPLETION, "no abort for a request nobody cancelled", (F.MALFORMED_CHUNK,)),
    CheckSpec(
        F.ABORT_BEFORE_FIRST_TOKEN, "decode: no abort before first-token", _WELL_FORMED_AND_CANCELLABLE,
        only_in=Mode.DECODE,
    ),
    CheckSpec(
        F.DROPPED_STREAM_NOT_CLOSED, "a dropped stream closes the engine's generator, leaving no task",
        (F.MALFORMED_CHUNK,),
    ),
    CheckSpec(F.LIFECYCLE_ORDER_VIOLATED, "calls reach the engine in lifecycle order"),
    CheckSpec(
        F.CANCELLATION_LEAKED, "stopping 1 of 8 concurrent requests leaves the other 7 complete and unaborted",
        (F.CONCURRENT_GENERATE_FAILED, F.ABORTED_STREAM_NOT_ENDED, F.ABORT_ON_CLEAN_COMPLETION),
    ),
    CheckSpec(
        F.MID_STREAM_CANCELLATION_IGNORED, "a stop or kill at a drawn point of a long stream ends it 'cancelled'",
        (F.KILL_NOT_HANDLED_LIKE_STOP,),
    ),
    CheckSpec(
        F.SCHEDULE_FAILED,
        "random schedules of stops, kills and drops keep every rule",
        (
            F.CONCURRENT_GENERATE_FAILED,
            F.KILL_NOT_HANDLED_LIKE_STOP,
            F.ABORT_CALLED_TWICE,
            F.ABORT_ON_CLEAN_COMPLETION,
            F.ABORT_BEFORE_FIRST_TOKEN,
            F.DROPPED_STREAM_NOT_CLOSED,
            F.CANCELLATION_LEAKED,
            F.MID_STREAM_CANCELLATION_IGNORED,
        ),
    ),
    # An abort that always raises is AbortFailed's to report, once.
    CheckSpec(
        F.ABORT_AFTER_TERMINAL_RAISED, "abort() for a request already ended (an error terminal too) returns quietly",
        (F.NO_TERMINAL_CHUNK, F.ABORT_FAILED), needs_hook="abort",
    ),
)

SPECS: dict[Failure, CheckSpec] = {spec.failure: spec for spec in CHECKS}

Verdicts = dict[Failure, str | None]
"""What a probe judged: for each check, None when it passed, else the one-line reason it failed."""
