"""The conformance checks as data: each failure name, which kit it belongs to, what passing means, how to
fix a failure, and what it needs first.

Two kits run in one pass.  Upstream's kit (``Kit.UPSTREAM``): its checks, under its failure names, drive the
engine's raw stream with no adapter and never call ``abort()``.  The runtime kit (``Kit.RUNTIME``): checks
upstream lacks, driven through the reference adapter, which calls ``abort()`` as Dynamo's runtime does on a
stop or kill.  A check needs only checks of its own kit, plus the engine having started: a failure in one
kit never skips a check of the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dynamo_backend_protocol.model import Mode


class Kit(enum.StrEnum):
    """Which kit a check belongs to."""

    UPSTREAM = "upstream"
    """Upstream's conformance kit: the raw engine, no adapter, no abort()."""
    RUNTIME = "runtime"
    """The engine as Dynamo's runtime drives it: through the reference adapter, which calls abort()."""

    def describe(self) -> str:
        return "upstream's kit" if self is Kit.UPSTREAM else "as Dynamo's runtime drives the engine"


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
    ABORT_BEFORE_FIRST_READ_LOST = "AbortBeforeFirstReadLost"
    SCHEDULE_FAILED = "ScheduleFailed"
    ABORT_AFTER_TERMINAL_RAISED = "AbortAfterTerminalRaised"


@dataclass(frozen=True)
class CheckSpec:
    failure: Failure
    title: str
    """What passing means, in a few words."""
    fix: str
    """What to change in the engine when the check fails."""
    requires: tuple[Failure, ...] = ()
    """Checks of the same kit (or StartFailed) that must pass first: without them this one cannot be judged."""
    only_in: Mode | None = None
    """The one mode the check applies to; elsewhere it is skipped as not applicable."""
    not_in: Mode | None = None
    """The one mode the check does not apply to."""
    needs_hook: str | None = None
    """An optional engine method the check exercises; an engine without it is not judged."""
    upstream: bool = False
    """Whether upstream's conformance kit has this check (same failure name)."""

    @property
    def kit(self) -> Kit:
        return Kit.UPSTREAM if self.upstream else Kit.RUNTIME


F = Failure
STARTED = (F.START_FAILED,)
"""What every check needs, whichever its kit: an engine that started."""
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
_CHECK_IS_STOPPED = "check context.is_stopped() before each token and end with a 'cancelled' terminal"

CHECKS: tuple[CheckSpec, ...] = (
    # Upstream's kit: the raw engine, no adapter, never an abort().
    CheckSpec(F.START_FAILED, "start succeeds", "make start() succeed (a slow one needs --start-timeout)",
              upstream=True),
    CheckSpec(
        F.EMPTY_MODEL_IN_CONFIG, "start returns a config with a non-empty model",
        "return EngineConfig(model=<the served model's name>) from start()", STARTED, upstream=True,
    ),
    CheckSpec(F.GENERATE_FAILED, "generate sets up a stream",
              "let generate() accept the preprocessor's request (token_ids, stop_conditions, ...)", STARTED,
              upstream=True),
    CheckSpec(F.NO_CHUNKS_YIELDED, "the stream yields items", "yield token chunks, then a terminal chunk",
              (F.GENERATE_FAILED,), upstream=True),
    CheckSpec(F.STREAM_YIELDED_ERROR, "every item is a chunk, not an error",
              "yield chunks; raise a typed error only for a request that truly failed", (F.NO_CHUNKS_YIELDED,),
              upstream=True),
    CheckSpec(F.CHUNK_AFTER_TERMINAL, "nothing follows the terminal chunk",
              "end the stream right after the chunk with a finish_reason", (F.STREAM_YIELDED_ERROR,), upstream=True),
    CheckSpec(F.NO_TERMINAL_CHUNK, "the stream ends with a terminal chunk",
              "end every stream with a chunk that has a finish_reason", (F.STREAM_YIELDED_ERROR,), upstream=True),
    # In encode mode each of them must be a well-formed hand-off, so the encode checks come first.
    CheckSpec(
        F.CONCURRENT_GENERATE_FAILED, "8 interleaved requests all complete",
        "keep per-request state per request; let requests run side by side", (*_SINGLE_STREAM_OK, *ENCODE_SUITE),
        upstream=True,
    ),
    CheckSpec(
        F.CANCELLATION_NOT_OBSERVED, "a stream stopped once live ends within the deadline, with no abort()",
        _CHECK_IS_STOPPED + " (upstream's kit never calls abort(); Dynamo's runtime does)", _SINGLE_STREAM_OK,
        upstream=True,
    ),
    CheckSpec(
        F.CANCELLATION_IGNORED, "a stopped stream ends with a 'cancelled' terminal",
        "end a stopped stream with finish_reason 'cancelled'", (F.CANCELLATION_NOT_OBSERVED,), upstream=True,
    ),
    # Cleanup is judged after start whatever start did: a start that raised still gets its cleanup.
    CheckSpec(F.CLEANUP_FAILED, "cleanup succeeds after start",
              "make cleanup() succeed, also after a start that raised (null-safe on partial state)", upstream=True),
    CheckSpec(F.SECOND_CLEANUP_FAILED, "a second cleanup succeeds", "make cleanup() a no-op once cleaned up",
              (F.CLEANUP_FAILED,), upstream=True),
    CheckSpec(F.CLEANUP_WITHOUT_START_FAILED, "cleanup succeeds on a never-started engine",
              "make cleanup() safe on an engine start() never ran on", upstream=True),
    CheckSpec(
        F.KV_EVENT_SOURCES_FAILED, "kv_event_sources() succeeds, twice", "make kv_event_sources() succeed after start",
        STARTED, upstream=True, needs_hook="kv_event_sources",
    ),
    CheckSpec(
        F.KV_EVENT_SOURCES_NOT_IDEMPOTENT, "kv_event_sources() gives the same dp ranks each time",
        "build the KV event sources once and return the same ones each call", (F.KV_EVENT_SOURCES_FAILED,),
        upstream=True, needs_hook="kv_event_sources",
    ),
    CheckSpec(
        F.COMPLETION_TOKENS_MISMATCH, "a terminal's completion_tokens counts the tokens streamed",
        "count the token ids you yield in completion_usage.completion_tokens", _SINGLE_STREAM_OK,
        not_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_CHUNK_COUNT, "encode: the stream is exactly one terminal chunk", "yield the hand-off chunk only",
        (F.STREAM_YIELDED_ERROR,), only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_TERMINAL_EXPECTED, "encode: the terminal's finish_reason is 'stop'",
        "end the encode hand-off with finish_reason 'stop'", _ENCODE_TERMINAL, only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODE_TOKENS_NOT_EMPTY, "encode: the terminal carries no token ids",
        "put the encoder output in encoder_result, not in token_ids", _ENCODE_TERMINAL, only_in=Mode.ENCODE,
        upstream=True,
    ),
    CheckSpec(
        F.ENCODE_USAGE_MISMATCH, "encode: usage, if any, is the prompt and zero completion tokens",
        "report the prompt tokens and 0 completion tokens", _ENCODE_TERMINAL, only_in=Mode.ENCODE, upstream=True,
    ),
    CheckSpec(
        F.ENCODER_RESULT_EXPECTED_OBJECT, "encode: the terminal carries an encoder_result object",
        "put an object (a dict) in the terminal's encoder_result", _ENCODE_TERMINAL, only_in=Mode.ENCODE,
        upstream=True,
    ),
    # The runtime kit: through the reference adapter, which calls abort() on a stop or kill, as the runtime does.
    CheckSpec(
        F.MALFORMED_CHUNK, "every chunk is well-formed for the mode",
        "yield dicts with token_ids (a list of ints) and what the mode's terminal carries", STARTED,
    ),
    CheckSpec(
        F.ABORT_FAILED, "abort(context) of a stopped request returns within the deadline, without raising",
        "make abort() quick and never raising, also for a request it holds nothing for", STARTED,
        needs_hook="abort",
    ),
    CheckSpec(
        F.ABORTED_STREAM_NOT_ENDED, "after abort() the stream still ends: it is not left waiting for ever",
        "after abort() wake whatever the stream waits on and end it with a 'cancelled' terminal "
        "(a library that forgets an aborted request never resumes its stream)",
        (F.ABORT_FAILED,),
    ),
    CheckSpec(F.KILL_NOT_HANDLED_LIKE_STOP, "a killed stream ends like a stopped one",
              "treat context.kill() like a stop: end with a 'cancelled' terminal", STARTED),
    CheckSpec(F.ABORT_CALLED_TWICE, "abort reaches the engine at most once per request",
              "leave abort() to the runtime; never call self.abort()", STARTED),
    CheckSpec(F.ABORT_ON_CLEAN_COMPLETION, "no abort for a request nobody cancelled",
              "never stop your own context; end the stream with a terminal chunk instead", STARTED),
    CheckSpec(
        F.ABORT_BEFORE_FIRST_TOKEN, "decode: no abort before first-token",
        "leave abort() to the runtime, which defers it in decode until first-token", STARTED, only_in=Mode.DECODE,
    ),
    CheckSpec(
        F.DROPPED_STREAM_NOT_CLOSED, "a dropped stream closes the engine's generator, leaving no task",
        "cancel per-request tasks in the generator's finally", STARTED,
    ),
    CheckSpec(F.LIFECYCLE_ORDER_VIOLATED, "calls reach the engine in lifecycle order",
              "do not call cleanup() or start() from inside request handling"),
    CheckSpec(
        F.CANCELLATION_LEAKED, "stopping 1 of 8 concurrent requests leaves the other 7 complete and unaborted",
        "keep the stop with its own request (its context), not an engine-wide flag", STARTED,
    ),
    CheckSpec(
        F.MID_STREAM_CANCELLATION_IGNORED,
        "a stop or kill after the first chunk (and, property-based, at drawn later points) ends the stream "
        "'cancelled'",
        _CHECK_IS_STOPPED + ", or make abort() end the request, at every token, not only the first few", STARTED,
    ),
    CheckSpec(
        F.ABORT_BEFORE_FIRST_READ_LOST,
        "a stop right after generate() returns, aborted before the first read while a reader waits, ends the stream",
        "remember an abort that comes before the generator body runs (e.g. note the request id in generate() "
        "itself, or check context.is_stopped() before submitting the request)", STARTED,
    ),
    CheckSpec(
        F.SCHEDULE_FAILED,
        "random schedules of stops, kills and drops keep every rule",
        "replay the schedule in the reason; it breaks the rule named there", STARTED,
    ),
    # An abort that always raises is AbortFailed's to report, once.
    CheckSpec(
        F.ABORT_AFTER_TERMINAL_RAISED, "abort() for a request already ended (an error terminal too) returns quietly",
        "treat abort() for a request you no longer hold as done: look it up without raising and return",
        (F.ABORT_FAILED,), needs_hook="abort",
    ),
)

SPECS: dict[Failure, CheckSpec] = {spec.failure: spec for spec in CHECKS}

Verdicts = dict[Failure, str | None]
"""What a probe judged: for each check, None when it passed, else the one-line reason it failed."""
