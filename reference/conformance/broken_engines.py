"""Deliberately broken engines: one per conformance failure name, each with one realistic bug.

Each is :class:`SampleEngine` with one thing done wrong (marked ``BUG``), so
the conformance kit can be seen to fail it with the intended failure name
and a reason that points at the bug.  :data:`BROKEN_ENGINES` maps each
failure name to its engine; ``dynamo-backend-protocol conform
dynamo_backend_protocol.reference.conformance.broken_engines:NoFinishReasonEngine``
shows one in action.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dynamo_backend_protocol.model import BackendError, DynamoError, Mode
from dynamo_backend_protocol.reference.chunks import Chunk, cancelled, length, stop, token, usage
from dynamo_backend_protocol.reference.conformance.checks import Failure
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.engine import EngineConfig


class _Engine(SampleEngine):
    """SampleEngine plus the pieces the broken streams below share."""

    def prompt_tokens(self, request: dict[str, Any]) -> int:
        return len(request.get("token_ids") or [])

    def token_limit(self, request: dict[str, Any]) -> int:
        return self._token_limit(request)

    async def stream_until(
        self, request: dict[str, Any], stopped: Callable[[int], bool]
    ) -> AsyncIterator[dict[str, Any]]:
        """SampleEngine's stream, ending 'cancelled' when ``stopped(tokens produced so far)`` says so."""
        prompt, limit = self.prompt_tokens(request), self.token_limit(request)
        for produced in range(limit):
            if stopped(produced):
                yield cancelled().with_usage(usage(prompt, produced))
                return
            await asyncio.sleep(self.delay)
            if produced == limit - 1:
                yield length().with_tokens([produced + 1]).with_usage(usage(prompt, limit))
                return
            yield token(produced + 1)


class StartFailsEngine(_Engine):
    """start raises: the model store cannot be reached."""

    async def start(self, worker_id: int) -> EngineConfig:
        raise DynamoError(BackendError.CANNOT_CONNECT, "model store unreachable")  # BUG (or bad luck)


class EmptyModelEngine(_Engine):
    """start returns a config without a model name."""

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model="")  # BUG: the name was meant to come from a flag nobody set


class PromptKeyEngine(_Engine):
    """generate reads a text prompt, which Dynamo never sends (it sends token_ids)."""

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        request["prompt"]  # BUG: KeyError
        return super().generate(request, context)


class SilentEngine(_Engine):
    """The stream collects the scheduler's outputs into a list nobody fills, and yields nothing."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []  # BUG: the scheduler writes elsewhere
        for chunk in outputs:
            yield chunk


class MidStreamErrorEngine(_Engine):
    """Every request fails after its first token."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        yield token(1)
        raise DynamoError(BackendError.UNKNOWN, "sampler state lost after the first step")  # BUG


class UsageAfterTerminalEngine(_Engine):
    """Sends the usage as its own chunk after the terminal."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        prompt, limit = self.prompt_tokens(request), self.token_limit(request)
        for produced in range(limit):
            if context.is_stopped():
                yield cancelled()
                return
            await asyncio.sleep(self.delay)
            if produced < limit - 1:
                yield token(produced + 1)
        yield length().with_tokens([limit])
        yield {"token_ids": [], "completion_usage": usage(prompt, limit)}  # BUG: after the terminal


class NoFinishReasonEngine(_Engine):
    """Never marks the last chunk with a finish_reason."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        for produced in range(self.token_limit(request)):
            if context.is_stopped():
                yield cancelled()
                return
            await asyncio.sleep(self.delay)
            yield token(produced + 1)  # BUG: the last one should be length().with_tokens(...)


class SingleSlotEngine(_Engine):
    """Serves one request at a time and refuses a second one that arrives meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy = False

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        if self._busy:
            raise DynamoError(BackendError.UNKNOWN, "engine busy with another request")  # BUG
        self._busy = True
        try:
            async for chunk in super()._stream(request, context):
                yield chunk
        finally:
            self._busy = False


class NeverStopsEngine(_Engine):
    """Never looks at the context: a stopped request runs to its full length, slowly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("delay", 0.01)
        super().__init__(*args, **kwargs)

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        prompt, limit = self.prompt_tokens(request), self.token_limit(request)
        for produced in range(limit):  # BUG: no context.is_stopped() check
            await asyncio.sleep(self.delay)
            if produced == limit - 1:
                yield length().with_tokens([produced + 1]).with_usage(usage(prompt, limit))
                return
            yield token(produced + 1)


class WrongCancelReasonEngine(_Engine):
    """Notices the stop but reports it as a normal 'stop' finish."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "cancelled":
                yield stop().with_usage(chunk["completion_usage"])  # BUG: should stay 'cancelled'
            else:
                yield chunk


class CleanupRaisesEngine(_Engine):
    """cleanup of a started engine fails: it waits for a shutdown acknowledgement that never comes."""

    async def cleanup(self) -> None:
        if self.worker_id is not None:
            raise DynamoError(BackendError.ENGINE_SHUTDOWN, "scheduler did not acknowledge shutdown")  # BUG


class _Pool:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        if self.closed:
            raise RuntimeError("worker pool already closed")
        self.closed = True


class NonIdempotentCleanupEngine(_Engine):
    """A second cleanup closes the worker pool again, which raises."""

    async def start(self, worker_id: int) -> EngineConfig:
        self._pool = _Pool()
        return await super().start(worker_id)

    async def cleanup(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            await pool.close()  # BUG: not guarded by 'if not pool.closed'


class FragileCleanupEngine(_Engine):
    """cleanup assumes start ran: on a never-started engine it dereferences None."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: _Pool | None = None

    async def start(self, worker_id: int) -> EngineConfig:
        self._pool = _Pool()
        return await super().start(worker_id)

    async def cleanup(self) -> None:
        pool = self._pool
        if pool is None or not pool.closed:
            await pool.close()  # type: ignore[union-attr]  # BUG: pool is None when start never ran


class IntTokenEngine(_Engine):
    """Puts the token id itself in token_ids, not a list of ids."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") is None:
                yield {"token_ids": chunk["token_ids"][0]}  # BUG: must be a list
            else:
                yield chunk


class StrandedByAbortEngine(_Engine):
    """abort cancels the request's producer task but leaves the stream waiting for output forever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._producers: dict[str, asyncio.Task[None]] = {}

    async def _produce(self, request: dict[str, Any], queue: asyncio.Queue[dict[str, Any]]) -> None:
        prompt, limit = self.prompt_tokens(request), self.token_limit(request)
        for produced in range(limit):
            await asyncio.sleep(self.delay)
            if produced == limit - 1:
                await queue.put(length().with_tokens([produced + 1]).with_usage(usage(prompt, limit)))
            else:
                await queue.put(token(produced + 1))

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        producer = asyncio.get_running_loop().create_task(self._produce(request, queue))
        self._producers[context.id()] = producer
        try:
            while True:
                if context.is_stopped():
                    yield cancelled()
                    return
                chunk = await queue.get()  # after abort nothing ever arrives
                yield chunk
                if chunk.get("finish_reason") is not None:
                    return
        finally:
            producer.cancel()
            self._producers.pop(context.id(), None)

    async def abort(self, context: Context) -> None:
        producer = self._producers.get(context.id())
        if producer is not None:
            producer.cancel()  # BUG: the stream is not woken, so it never ends


class KillIgnoringEngine(_Engine):
    """Treats a kill as 'the client is gone', and returns without a terminal."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._stream(request, context):
            if context.is_killed():
                return  # BUG: a kill is also a stop and ends with 'cancelled'
            yield chunk


class DoubleAbortEngine(_Engine):
    """Aborts the request itself on noticing a stop, on top of the runtime's abort."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        produced = 0
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "cancelled" and produced:
                await self.abort(context)  # BUG: the runtime already calls abort
            produced += len(chunk.get("token_ids") or [])
            yield chunk


class SelfStoppingEngine(_Engine):
    """Stops its own context to say 'done', which makes the runtime abort a finished request."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "length":
                context.stop_generating()  # BUG: the terminal chunk already says 'done'
            yield chunk


class EagerDecodeAbortEngine(_Engine):
    """In decode mode, frees the request at once when stopped before its first token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mode", Mode.DECODE)
        super().__init__(*args, **kwargs)

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        produced = 0
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "cancelled" and not produced:
                await self.abort(context)  # BUG: orphans the prefill worker's KV transfer
            produced += len(chunk.get("token_ids") or [])
            yield chunk


class LeakyProducerEngine(_Engine):
    """Feeds each request from a producer task that nobody cancels when the stream is dropped."""

    async def _produce(self, request: dict[str, Any], queue: asyncio.Queue[dict[str, Any]]) -> None:
        prompt, limit = self.prompt_tokens(request), self.token_limit(request)
        for produced in range(limit):
            await asyncio.sleep(self.delay)
            if produced == limit - 1:
                await queue.put(length().with_tokens([produced + 1]).with_usage(usage(prompt, limit)))
            else:
                await queue.put(token(produced + 1))

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._produce(request, queue))  # BUG: never cancelled
        while True:
            if context.is_stopped():
                yield cancelled()
                return
            chunk = await queue.get()
            yield chunk
            if chunk.get("finish_reason") is not None:
                return


class AbortTearsDownEngine(_Engine):
    """abort releases 'everything': it calls cleanup, shutting the engine down mid-service."""

    async def abort(self, context: Context) -> None:
        await self.cleanup()  # BUG: cleanup is for shutdown, not for one request


class LateStopEngine(_Engine):
    """Once a request has produced two tokens, a stop or kill makes it return without a terminal."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        produced = 0
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "cancelled" and produced >= 2:
                return  # BUG: a late cancellation still owes a 'cancelled' terminal
            produced += len(chunk.get("token_ids") or [])
            yield chunk


class AbortRaisesEngine(_Engine):
    """abort looks the request up in a table it never filled, and raises."""

    async def abort(self, context: Context) -> None:
        slots: dict[str, int] = {}
        del slots[context.id()]  # BUG: abort must tolerate a request it holds nothing for, and never raise


class ForgetsFinishedRequestsEngine(_Engine):
    """Forgets a request when its stream ends, and raises when abort then names it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._live: set[str] = set()

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        self._live.add(context.id())
        return super().generate(request, context)

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in super()._stream(request, context):
                yield chunk
        finally:
            self._live.discard(context.id())

    async def abort(self, context: Context) -> None:
        if context.id() not in self._live:
            # BUG: the runtime may abort a request after its terminal; a finished request is not an error
            raise KeyError(context.id())


class SharedStopFlagEngine(_Engine):
    """Keeps one stop flag for the whole engine: stopping one request ends every request running beside it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = False

    def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        self._stopping = False  # BUG: the flag belongs to the request, not the engine

        def stopped(produced: int) -> bool:
            self._stopping = self._stopping or context.is_stopped()
            return self._stopping

        return self.stream_until(request, stopped)


class EarlyStopsOnlyEngine(_Engine):
    """Looks at context.is_stopped() for its first three tokens only, then stops checking."""

    def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        # BUG: a stop can come at any token
        return self.stream_until(request, lambda produced: produced < 3 and context.is_stopped())


class AbortOnlyOnceAdmittedEngine(_Engine):
    """Cancels through abort() only, and only requests its generator body has admitted (as a GPU library keyed
    by request id does): an abort that comes between generate() returning and the first read finds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("delay", 0.01)
        super().__init__(*args, **kwargs)
        self._admitted: dict[str, asyncio.Event] = {}

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        aborted = self._admitted[context.id()] = asyncio.Event()
        try:
            async for chunk in self.stream_until(request, lambda produced: aborted.is_set()):
                yield chunk
        finally:
            self._admitted.pop(context.id(), None)

    async def abort(self, context: Context) -> None:
        admitted = self._admitted.get(context.id())
        if admitted is not None:  # BUG: an abort for a request not admitted yet is dropped, not remembered
            admitted.set()


class OvercountingEngine(_Engine):
    """Reports the prompt's last token among the completion tokens it streamed."""

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._stream(request, context):
            if chunk.get("finish_reason") == "length":
                prompt, streamed = self.prompt_tokens(request), self.token_limit(request)
                chunk["completion_usage"] = usage(prompt, streamed + 1)  # BUG: counts the seed token it never streamed
            yield chunk


@dataclass(frozen=True)
class _KvSource:
    dp_rank: int


class KvSourcesFailEngine(_Engine):
    """Looks up its KV event endpoint in a setting nobody passed."""

    async def kv_event_sources(self) -> list[Any]:
        raise DynamoError(BackendError.INVALID_ARGUMENT, "no --kv-events-endpoint configured")  # BUG


class KvSourcesShiftEngine(_Engine):
    """Allocates a fresh data-parallel rank on every call instead of once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ranks = itertools.count()

    async def kv_event_sources(self) -> list[Any]:
        return [_KvSource(next(self._ranks))]  # BUG: the ranks change from call to call


class _EncodeEngine(_Engine):
    """An encode worker: SampleEngine in encode mode, with the hand-off chunk built by :meth:`handoff`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mode", Mode.ENCODE)
        super().__init__(*args, **kwargs)

    async def _encode(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super()._encode(request, context):
            yield chunk if chunk.get("finish_reason") == "cancelled" else self.handoff(Chunk(chunk))

    def handoff(self, chunk: Chunk) -> Chunk:
        return chunk


class ProgressChunksEncodeEngine(_EncodeEngine):
    """Streams a progress chunk per image before the hand-off."""

    async def _encode(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        if not context.is_stopped():
            yield {"token_ids": [], "index": 0}  # BUG: an encode worker yields the hand-off only
        async for chunk in super()._encode(request, context):
            yield chunk


class LengthFinishEncodeEngine(_EncodeEngine):
    """Ends the hand-off with the token-limit reason."""

    def handoff(self, chunk: Chunk) -> Chunk:
        chunk["finish_reason"] = "length"  # BUG: a hand-off ends with 'stop'
        return chunk


class TokensInHandoffEncodeEngine(_EncodeEngine):
    """Puts the image placeholder tokens into the hand-off chunk."""

    def handoff(self, chunk: Chunk) -> Chunk:
        return chunk.with_tokens([32000, 32000])  # BUG: encode output is the encoder_result, not tokens


class CountsEmbeddingsEncodeEngine(_EncodeEngine):
    """Reports the embeddings it produced as completion tokens."""

    def handoff(self, chunk: Chunk) -> Chunk:
        prompt = chunk["completion_usage"]["prompt_tokens"]
        return chunk.with_usage(usage(prompt, 16))  # BUG: a hand-off completes zero tokens


class HandleOnlyEncodeEngine(_EncodeEngine):
    """Hands off a bare string handle instead of an object."""

    def handoff(self, chunk: Chunk) -> Chunk:
        return chunk.with_field("encoder_result", "sample-encoder:0")  # BUG: the hand-off must be an object


BROKEN_ENGINES: dict[Failure, type[SampleEngine]] = {
    Failure.START_FAILED: StartFailsEngine,
    Failure.EMPTY_MODEL_IN_CONFIG: EmptyModelEngine,
    Failure.GENERATE_FAILED: PromptKeyEngine,
    Failure.NO_CHUNKS_YIELDED: SilentEngine,
    Failure.STREAM_YIELDED_ERROR: MidStreamErrorEngine,
    Failure.CHUNK_AFTER_TERMINAL: UsageAfterTerminalEngine,
    Failure.NO_TERMINAL_CHUNK: NoFinishReasonEngine,
    Failure.CONCURRENT_GENERATE_FAILED: SingleSlotEngine,
    Failure.CANCELLATION_NOT_OBSERVED: NeverStopsEngine,
    Failure.CANCELLATION_IGNORED: WrongCancelReasonEngine,
    Failure.CLEANUP_FAILED: CleanupRaisesEngine,
    Failure.SECOND_CLEANUP_FAILED: NonIdempotentCleanupEngine,
    Failure.CLEANUP_WITHOUT_START_FAILED: FragileCleanupEngine,
    Failure.KV_EVENT_SOURCES_FAILED: KvSourcesFailEngine,
    Failure.KV_EVENT_SOURCES_NOT_IDEMPOTENT: KvSourcesShiftEngine,
    Failure.COMPLETION_TOKENS_MISMATCH: OvercountingEngine,
    Failure.ENCODE_CHUNK_COUNT: ProgressChunksEncodeEngine,
    Failure.ENCODE_TERMINAL_EXPECTED: LengthFinishEncodeEngine,
    Failure.ENCODE_TOKENS_NOT_EMPTY: TokensInHandoffEncodeEngine,
    Failure.ENCODE_USAGE_MISMATCH: CountsEmbeddingsEncodeEngine,
    Failure.ENCODER_RESULT_EXPECTED_OBJECT: HandleOnlyEncodeEngine,
    Failure.MALFORMED_CHUNK: IntTokenEngine,
    Failure.ABORTED_STREAM_NOT_ENDED: StrandedByAbortEngine,
    Failure.KILL_NOT_HANDLED_LIKE_STOP: KillIgnoringEngine,
    Failure.ABORT_CALLED_TWICE: DoubleAbortEngine,
    Failure.ABORT_ON_CLEAN_COMPLETION: SelfStoppingEngine,
    Failure.ABORT_BEFORE_FIRST_TOKEN: EagerDecodeAbortEngine,
    Failure.DROPPED_STREAM_NOT_CLOSED: LeakyProducerEngine,
    Failure.LIFECYCLE_ORDER_VIOLATED: AbortTearsDownEngine,
    Failure.ABORT_FAILED: AbortRaisesEngine,
    Failure.CANCELLATION_LEAKED: SharedStopFlagEngine,
    Failure.MID_STREAM_CANCELLATION_IGNORED: EarlyStopsOnlyEngine,
    Failure.ABORT_BEFORE_FIRST_READ_LOST: AbortOnlyOnceAdmittedEngine,
    Failure.SCHEDULE_FAILED: LateStopEngine,
    Failure.ABORT_AFTER_TERMINAL_RAISED: ForgetsFinishedRequestsEngine,
}
"""The engine that fails each check (EagerDecodeAbortEngine is a decode engine, the *EncodeEngine ones are
encode engines; the rest are checked in agg)."""
