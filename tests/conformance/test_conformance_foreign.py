"""Engines the kit has never seen, written to Dynamo's Python engine conventions, are judged correctly.

They do not subclass anything from this project: ``start()`` with or without
``worker_id``, ``generate(self, request, context)`` as an async generator,
chunks as plain dicts without ``index``, usage spelled out inline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import CheckStatus, ConformanceCheck, ConformanceReport, run_conformance

C = ConformanceCheck
DEADLINE = 0.2


def conform(factory: Any, mode: Mode) -> ConformanceReport:
    return asyncio.run(run_conformance(factory, mode=mode, cancel_deadline=DEADLINE, examples=15))


def failed(report: ConformanceReport) -> set[str]:
    return {result.failure for result in report.checks if result.status is CheckStatus.FAILED}


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class CountdownEngine:
    """Old-style start() without worker_id; one token per step; honours stop."""

    def __init__(self, model_name: str = "countdown", max_tokens: int = 12, delay: float = 0.0005) -> None:
        self.model_name = model_name
        self.max_tokens = max_tokens
        self.delay = delay

    async def start(self) -> dict[str, Any]:
        return {"model": self.model_name, "context_length": 4096}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        prompt = len(request.get("token_ids", []))
        limit = request.get("stop_conditions", {}).get("max_tokens") or self.max_tokens
        for step in range(limit):
            if context.is_stopped():
                yield {"token_ids": [], "finish_reason": "cancelled", "completion_usage": usage(prompt, step)}
                return
            await asyncio.sleep(self.delay)
            chunk: dict[str, Any] = {"token_ids": [limit - step]}
            if step == limit - 1:
                chunk["finish_reason"] = "length"
                chunk["completion_usage"] = usage(prompt, limit)
            yield chunk

    async def cleanup(self) -> None:
        pass


class ForgetfulCountdownEngine(CountdownEngine):
    """The same engine without the stop check: a cancelled request runs on."""

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        limit = request.get("stop_conditions", {}).get("max_tokens") or self.max_tokens
        for step in range(limit):
            await asyncio.sleep(self.delay)
            yield {"token_ids": [step], **({"finish_reason": "length"} if step == limit - 1 else {})}


class NamelessCountdownEngine(CountdownEngine):
    """start reports its limits but forgets the model name."""

    async def start(self) -> dict[str, Any]:
        return {"context_length": 4096}


class SchedulerEngine:
    """start(worker_id) runs a scheduler task that feeds every active request one token per tick.

    Per-request state lives in a queue registered by generate and removed in
    its finally; abort stops feeding a request and wakes its stream; drain
    waits for active requests; cleanup stops the scheduler (null-safe, idempotent).
    """

    def __init__(self, tick: float = 0.0005) -> None:
        self.tick = tick
        self.active: dict[str, tuple[asyncio.Queue[dict[str, Any]], int, int]] = {}
        self.scheduler: asyncio.Task[None] | None = None

    async def start(self, worker_id: int) -> dict[str, Any]:
        self.scheduler = asyncio.get_running_loop().create_task(self._schedule())
        return {"model": f"scheduler-{worker_id}"}

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            for request_id, (queue, produced, limit) in list(self.active.items()):
                if produced >= limit:
                    continue
                chunk: dict[str, Any] = {"token_ids": [produced + 7]}
                if produced == limit - 1:
                    chunk["finish_reason"] = "stop"
                queue.put_nowait(chunk)
                self.active[request_id] = (queue, produced + 1, limit)

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        limit = request.get("stop_conditions", {}).get("max_tokens") or 16
        self.active[context.id()] = (queue, 0, limit)
        try:
            while True:
                if context.is_stopped():
                    yield {"token_ids": [], "finish_reason": "cancelled"}
                    return
                chunk = await queue.get()
                if chunk.get("finish_reason") == "cancelled":
                    continue  # a wake-up from abort; the stop check above ends the stream
                yield chunk
                if chunk.get("finish_reason"):
                    return
        finally:
            self.active.pop(context.id(), None)

    async def abort(self, context: Any) -> None:
        entry = self.active.get(context.id())
        if entry is not None:
            queue, _, _ = entry
            self.active[context.id()] = (queue, 0, 0)  # stop feeding it
            queue.put_nowait({"token_ids": [], "finish_reason": "cancelled"})  # wake the stream

    async def drain(self) -> None:
        while self.active:
            await asyncio.sleep(self.tick)

    async def cleanup(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler


class LazySchedulerEngine(SchedulerEngine):
    """Starts its scheduler on the first request (as some engines start their output handler),
    and drains itself as the first step of cleanup."""

    async def start(self, worker_id: int) -> dict[str, Any]:
        return {"model": f"lazy-{worker_id}"}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        if self.scheduler is None:
            self.scheduler = asyncio.get_running_loop().create_task(self._schedule())
        async for chunk in super().generate(request, context):
            yield chunk

    async def cleanup(self) -> None:
        await self.drain()
        await super().cleanup()


class SilentAbortSchedulerEngine(SchedulerEngine):
    """abort stops feeding the request but does not wake its stream."""

    async def abort(self, context: Any) -> None:
        entry = self.active.get(context.id())
        if entry is not None:
            self.active[context.id()] = (entry[0], 0, 0)


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.PREFILL, Mode.DECODE], ids=str)
def test_a_sample_style_engine_passes_in_every_mode_it_supports(mode: Mode) -> None:
    """No worker_id, no index, plain dicts: nothing fails."""
    report = conform(CountdownEngine, mode)
    assert report.ok, report.render()


def test_a_token_generator_checked_as_an_encode_worker_fails_upstreams_encode_suite() -> None:
    """An encode worker answers with one token-less 'stop' hand-off carrying an encoder_result object;
    a token generator breaks every part of that, under upstream's names; the runtime kit, which upstream's
    failures do not mask, sees the same chunks as malformed for encode mode (and its schedules again)."""
    report = conform(CountdownEngine, Mode.ENCODE)
    assert failed(report) == {
        C.ENCODE_CHUNK_COUNT, C.ENCODE_TERMINAL_EXPECTED, C.ENCODE_TOKENS_NOT_EMPTY, C.ENCODE_USAGE_MISMATCH,
        C.ENCODER_RESULT_EXPECTED_OBJECT, C.MALFORMED_CHUNK, C.SCHEDULE_FAILED,
    }
    assert "encoder_result" in report.result(C.ENCODER_RESULT_EXPECTED_OBJECT).reason
    assert "encode-mode" in report.result(C.MALFORMED_CHUNK).reason


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.DECODE], ids=str)
def test_a_scheduler_style_engine_with_abort_and_drain_passes(mode: Mode) -> None:
    """Background scheduler, per-request queues, abort, drain, careful cleanup: it conforms."""
    report = conform(SchedulerEngine, mode)
    assert report.ok, report.render()


def test_a_lazily_started_scheduler_and_a_self_draining_cleanup_are_fine() -> None:
    """A long-lived task started on the first request is no leak, and calls an engine makes on itself
    inside its own cleanup are its own business."""
    report = conform(LazySchedulerEngine, Mode.AGGREGATED)
    assert report.ok, report.render()


def test_forgetting_the_stop_check_is_cancellation_not_observed() -> None:
    """A stream that never looks at context.is_stopped() runs past the deadline; the reason says where to look.
    Through the adapter (abort() is a no-op here) it ignores the stop too: MidStreamCancellationIgnored."""
    report = conform(ForgetfulCountdownEngine, Mode.AGGREGATED)
    assert failed(report) == {C.CANCELLATION_NOT_OBSERVED, C.MID_STREAM_CANCELLATION_IGNORED}
    assert "it kept streaming" in report.result(C.MID_STREAM_CANCELLATION_IGNORED).reason
    assert "context.is_stopped()" in report.result(C.CANCELLATION_NOT_OBSERVED).reason


def test_a_config_without_model_is_empty_model_in_config() -> None:
    """A dict config without "model" fails EmptyModelInConfig and only that."""
    report = conform(NamelessCountdownEngine, Mode.AGGREGATED)
    assert failed(report) == {C.EMPTY_MODEL_IN_CONFIG}
    assert "no model" in report.result(C.EMPTY_MODEL_IN_CONFIG).reason


def test_an_abort_that_strands_the_stream_is_caught_though_upstream_checks_pass() -> None:
    """Upstream's kit never aborts, so only the adapter-driven checks see the stream hang after abort (the
    random schedules meet it again)."""
    report = conform(SilentAbortSchedulerEngine, Mode.AGGREGATED)
    assert failed(report) == {C.ABORTED_STREAM_NOT_ENDED, C.SCHEDULE_FAILED}
    upstream = [r for r in report.checks if r.failure in {C.CANCELLATION_NOT_OBSERVED, C.CANCELLATION_IGNORED}]
    assert all(r.passed for r in upstream)
