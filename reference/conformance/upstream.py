"""The upstream kit's checks, with its failure names, driving the engine's raw stream directly.

No adapter sits in between here, as in upstream's kit, so an item after the
terminal is seen rather than cut off.  Cleanup goes through the recorder so
the lifecycle machine names the rule a failing cleanup breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.model import FinishReason, Mode
from dynamo_backend_protocol.model.chunks import finish_reason_meaning
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.stopped import SHORT_STREAM_MODES
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import CANCEL_MAX_TOKENS, PLAIN_MAX_TOKENS
from dynamo_backend_protocol.reference.conformance.encode_checks import encode_verdicts
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.session import (
    EngineSession,
    KitSettings,
    KitTimeout,
    bounded,
    describe_error,
    shared_engine,
)
from dynamo_backend_protocol.reference.conformance.watchdog import within
from dynamo_backend_protocol.reference.context import Context

CONCURRENT_REQUESTS = 8
AFTER_TERMINAL_LOOKS = 4
"""How many further items the kit tries to read after a terminal, to catch what should not be there."""
F = Failure


@dataclass
class RawRun:
    items: list[object] = field(default_factory=list)
    raised: BaseException | None = None
    timed_out: bool = False

    def terminal_index(self) -> int | None:
        return next((i for i, item in enumerate(self.items) if _is_terminal(item)), None)

    def first_error(self) -> str | None:
        for position, item in enumerate(self.items, start=1):
            if isinstance(item, BaseException):
                return f"item #{position} was an error: {describe_error(item)}"
        if self.raised is not None:
            return f"the stream raised {describe_error(self.raised)} (after {len(self.items)} item(s))"
        return None


def _is_terminal(item: object) -> bool:
    return isinstance(item, Mapping) and item.get("finish_reason") is not None


async def open_raw_stream(engine: Any, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
    produced = engine.generate(request, context)
    if inspect.isawaitable(produced):
        produced = await produced
    aiter_method = getattr(produced, "__aiter__", None)
    if aiter_method is None:
        raise TypeError(f"generate must produce an async iterator, got {type(produced).__name__}")
    stream: AsyncIterator[Any] = aiter_method()
    return stream


async def read_raw(stream: AsyncIterator[Any], timeout: float, after_terminal: float) -> RawRun:
    """Read to the end within ``timeout``; past a terminal, look for up to a few more items, briefly."""
    run = RawRun()
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    extra = 0
    while extra <= AFTER_TERMINAL_LOOKS:
        past_terminal = run.terminal_index() is not None
        if past_terminal and (extra == AFTER_TERMINAL_LOOKS or after_terminal <= 0):
            break
        budget = after_terminal if past_terminal else until - loop.time()
        try:
            if budget <= 0:
                raise TimeoutError  # An engine that held the loop spent the budget without a timer firing.
            # within(), not asyncio.timeout: a stream that swallows its cancellation is abandoned at the bound.
            item = await within(stream.__anext__(), budget, "the stream")
        except StopAsyncIteration:
            break
        except TimeoutError:
            # Past a terminal, silence is what we hope for; before it, the engine is too slow.
            run.timed_out = not past_terminal
            break
        except Exception as exc:
            run.raised = exc
            break
        run.items.append(item)
        if past_terminal:
            extra += 1
    return run


async def close_raw(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await within(aclose(), 1.0, "closing the stream")


async def judge_start(session: EngineSession, settings: KitSettings) -> Verdicts:
    """Start the shared engine, bounded by the start timeout (a real engine loads its weights here)."""
    try:
        config = await session.start(settings)
    except KitTimeout as timeout:
        return {F.START_FAILED: f"{timeout}; a slow start needs a longer --start-timeout"}
    except Exception as exc:
        return {F.START_FAILED: f"start raised {describe_error(exc)}"}
    return {F.START_FAILED: None, F.EMPTY_MODEL_IN_CONFIG: _model_problem(config)}


def model_of(config: object) -> object:
    """The ``model`` of what ``start`` returned (an EngineConfig, Dynamo's or ours, or a mapping)."""
    return config.get("model") if isinstance(config, Mapping) else getattr(config, "model", None)


def _model_problem(config: object) -> str | None:
    model = model_of(config)
    if model is None:
        return f"start returned {type(config).__name__}, which has no model; return EngineConfig(model=...)"
    if not isinstance(model, str) or not model.strip():
        return f"start returned a config whose model is {model!r}; set it to the served model's name"
    return None


async def probe_plain_stream(settings: KitSettings) -> Verdicts:
    verdicts: Verdicts = {}
    async with shared_engine(settings) as session:
        context = Context("conformance-plain")
        request = settings.requests.request(PLAIN_MAX_TOKENS)
        try:
            stream = await bounded(open_raw_stream(session.engine, request, context), settings.stream_timeout,
                                   "generate")
        except Exception as exc:
            return {F.GENERATE_FAILED: f"generate raised {describe_error(exc)} before any stream existed"}
        verdicts[F.GENERATE_FAILED] = None
        run = await read_raw(stream, settings.stream_timeout, after_terminal=min(settings.cancel_deadline, 0.5))
        await close_raw(stream)
    if not run.items and run.raised is None:
        what = f"yielded nothing within {settings.stream_timeout:g} s" if run.timed_out else "ended without an item"
        verdicts[F.NO_CHUNKS_YIELDED] = f"the stream {what}; yield token chunks, then a terminal chunk"
        return verdicts
    verdicts[F.NO_CHUNKS_YIELDED] = None
    verdicts[F.STREAM_YIELDED_ERROR] = run.first_error()
    terminal = run.terminal_index()
    terminal_chunk = run.items[terminal] if terminal is not None else None
    if settings.mode is Mode.ENCODE:
        assert terminal_chunk is None or isinstance(terminal_chunk, Mapping)
        verdicts.update(encode_verdicts(run.items, terminal_chunk, len(request["token_ids"])))
    if terminal is None:
        how = f"was still going after {settings.stream_timeout:g} s" if run.timed_out else "ended"
        verdicts[F.NO_TERMINAL_CHUNK] = (
            f"the stream {how} after {len(run.items)} item(s), none with a finish_reason; "
            "end it with a terminal chunk (e.g. finish_reason 'length')"
        )
        verdicts[F.CHUNK_AFTER_TERMINAL] = None
        return verdicts
    verdicts[F.NO_TERMINAL_CHUNK] = None
    after = run.items[terminal + 1 :]
    verdicts[F.CHUNK_AFTER_TERMINAL] = (
        None
        if not after
        else f"item #{terminal + 2} ({_short(after[0])}) came after the terminal "
        f"(item #{terminal + 1}, finish_reason {_reason_of(run.items[terminal])!r}); end the stream right after it"
    )
    verdicts[F.COMPLETION_TOKENS_MISMATCH] = completion_tokens_problem(run.items[: terminal + 1])
    return verdicts


def completion_tokens_problem(chunks: list[object]) -> str | None:
    """Upstream's CompletionTokensMismatch: the terminal's ``completion_tokens``, when it reports usage, must
    be the number of token ids streamed (the framework counts output tokens from the chunks)."""
    usage = _field(chunks[-1], "completion_usage")
    reported = usage.get("completion_tokens") if isinstance(usage, Mapping) else None
    token_lists = [_field(chunk, "token_ids") for chunk in chunks]
    if type(reported) is not int or not all(isinstance(ids, list) for ids in token_lists):
        return None  # Nothing to compare, or ids that cannot be counted (MalformedChunk's business).
    streamed = sum(len(ids) for ids in token_lists if isinstance(ids, list))
    if streamed == reported:
        return None
    return (
        f"the stream carried {streamed} token id(s) but its terminal reports completion_tokens {reported}; "
        "count the tokens you yield (the framework records output tokens from the chunks)"
    )


def _field(item: object, key: str) -> object:
    return item.get(key) if isinstance(item, Mapping) else None


def _reason_of(item: object) -> object:
    return item.get("finish_reason") if isinstance(item, Mapping) else None


def _short(item: object) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


async def probe_concurrent(settings: KitSettings) -> Verdicts:
    async with shared_engine(settings) as session:

        async def one(number: int) -> str | None:
            context = Context(f"conformance-concurrent-{number}")
            request = settings.requests.request(PLAIN_MAX_TOKENS)
            try:
                stream = await bounded(open_raw_stream(session.engine, request, context), settings.stream_timeout,
                                       "generate")
            except Exception as exc:
                return f"request {number}: generate raised {describe_error(exc)}"
            run = await read_raw(stream, settings.stream_timeout, after_terminal=0)
            await close_raw(stream)
            error = run.first_error()
            if error is not None:
                return f"request {number}: {error}"
            terminal = run.terminal_index()
            if terminal is None:
                how = "did not finish in time" if run.timed_out else "ended without a terminal chunk"
                return f"request {number}: the stream {how}"
            if settings.mode is Mode.ENCODE:
                # As upstream: every concurrent encode request must get its own well-formed hand-off.
                handoff = run.items[terminal]
                assert isinstance(handoff, Mapping)
                verdicts = encode_verdicts(run.items, handoff, len(request["token_ids"]))
                broken = next(((name, why) for name, why in verdicts.items() if why is not None), None)
                if broken is not None:
                    return f"request {number}: {broken[0]}: {broken[1]}"
            return None

        problems = [p for p in await asyncio.gather(*(one(n) for n in range(1, CONCURRENT_REQUESTS + 1))) if p]
    if not problems:
        return {F.CONCURRENT_GENERATE_FAILED: None}
    return {
        F.CONCURRENT_GENERATE_FAILED: f"{len(problems)} of {CONCURRENT_REQUESTS} concurrent requests failed "
        f"(one alone succeeds); first: {problems[0]}"
    }


async def probe_cancellation(settings: KitSettings) -> Verdicts:
    async with shared_engine(settings) as session:
        context = Context("conformance-cancel")
        request = settings.requests.request(CANCEL_MAX_TOKENS)
        try:
            stream = await bounded(open_raw_stream(session.engine, request, context), settings.stream_timeout,
                                   "generate")
        except Exception as exc:
            return {F.CANCELLATION_NOT_OBSERVED: f"generate raised {describe_error(exc)} for a request with "
                                                 f"max_tokens {CANCEL_MAX_TOKENS}, so cancellation cannot be tried"}
        # Cancelled as soon as the stream is live, before the client reads anything.
        context.stop_generating()
        run = await read_raw(stream, settings.cancel_deadline, after_terminal=0)
        await close_raw(stream)
    if run.timed_out:
        return {
            F.CANCELLATION_NOT_OBSERVED: f"the stream did not end within {settings.cancel_deadline:g} s of "
            f"context.stop_generating() ({len(run.items)} items meanwhile); check context.is_stopped() in the "
            "generation loop and end with a 'cancelled' terminal"
        }
    return {F.CANCELLATION_NOT_OBSERVED: None, F.CANCELLATION_IGNORED: _cancelled_terminal_problem(run, settings.mode)}


def _cancelled_terminal_problem(run: RawRun, mode: Mode) -> str | None:
    prefix = "after context.stop_generating() the stream"
    terminal = run.terminal_index()
    if terminal is not None:
        reason = _reason_of(run.items[terminal])
        meaning = finish_reason_meaning(reason)
        if meaning is FinishReason.CANCELLED:
            return None
        if mode in SHORT_STREAM_MODES and meaning is not FinishReason.ERROR:
            # A prefill clamped to its one token, or an encode hand-off, is one step of work: it may well be
            # done before the stop could act, and a finished request owes no 'cancelled'.
            return None
        return f"{prefix} ended with finish_reason {reason!r} instead of 'cancelled'"
    error = run.first_error()
    if error is not None:
        return f"{prefix} failed ({error}) instead of ending with a 'cancelled' terminal"
    return f"{prefix} ended after {len(run.items)} item(s) without a terminal; end it with a 'cancelled' one"


async def _cleanup_problem(recorder: RecordingEngine, settings: KitSettings) -> str | None:
    """None if cleanup succeeded; else what it did and the lifecycle rule that broke."""
    try:
        await bounded(recorder.cleanup(), settings.cleanup_timeout, "cleanup")
    except KitTimeout as timeout:
        return str(timeout)
    except Exception as exc:
        breach = next(
            (b for b in reversed(recorder.breaches) if b.call.event is LifecycleEvent.CLEANUP_RAISED), None
        )
        rule = f" (rule {breach.rule}: {summary(breach.rule)})" if breach is not None else ""
        return f"raised {describe_error(exc)}{rule}"
    return None


async def judge_cleanup(settings: KitSettings, start_error: str | None) -> Verdicts:
    """Clean the shared engine up twice, as a Worker may at shutdown, after every other check used it."""
    recorder = settings.session().recording()
    first = await _cleanup_problem(recorder, settings)
    if first is not None:
        if start_error is None:
            return {F.CLEANUP_FAILED: f"cleanup after a successful start {first}"}
        return {
            F.CLEANUP_FAILED: f"cleanup after a start that raised ({start_error}) {first}; "
            "cleanup must be null-safe on partial state"
        }
    second = await _cleanup_problem(recorder, settings)
    if second is None:
        return {F.CLEANUP_FAILED: None, F.SECOND_CLEANUP_FAILED: None}
    return {
        F.CLEANUP_FAILED: None,
        F.SECOND_CLEANUP_FAILED: f"a second cleanup {second}; make cleanup a no-op once cleaned up",
    }


async def judge_cleanup_without_start(recorder: RecordingEngine, settings: KitSettings) -> Verdicts:
    """Clean up an engine that was built and never started."""
    problem = await _cleanup_problem(recorder, settings)
    if problem is None:
        return {F.CLEANUP_WITHOUT_START_FAILED: None}
    return {
        F.CLEANUP_WITHOUT_START_FAILED: f"cleanup on a never-started engine {problem}; "
        "cleanup must tolerate start never having run"
    }
