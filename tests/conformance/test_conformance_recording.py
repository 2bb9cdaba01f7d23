"""RecordingEngine: it forwards the engine API unchanged and records what reached the engine, and who called."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.reference import Context, EngineAdapter, SampleEngine, start_engine
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine

E = LifecycleEvent


def events(recorder: RecordingEngine) -> list[LifecycleEvent]:
    return [call.event for call in recorder.calls]


class SelfAbortingEngine(SampleEngine):
    async def abort(self, context: Context) -> None:
        self.aborted = context.id()

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        await self.abort(context)
        yield {"token_ids": [1], "finish_reason": "length"}


def test_start_without_worker_id_is_called_without_one() -> None:
    """An engine of an older Dynamo (start()) starts through the recorder as it would directly."""

    class OldStyle(SampleEngine):
        async def start(self) -> Any:  # type: ignore[override]
            return await super().start(7)

    recorder = RecordingEngine(OldStyle())
    config = asyncio.run(start_engine(recorder, 3))
    assert config.model == "sample-model"
    assert events(recorder) == [E.START_CALLED, E.START_OK]


def test_the_engines_own_call_to_abort_is_recorded_as_the_engines() -> None:
    """``await self.abort(ctx)`` inside the stream reaches the engine and is attributed to it."""

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(SelfAbortingEngine())
        await start_engine(recorder)
        stream = await recorder.generate({"token_ids": [1]}, Context("r1"))
        assert [item async for item in stream] == [{"token_ids": [1], "finish_reason": "length"}]
        return recorder

    recorder = asyncio.run(scenario())
    log = recorder.requests["r1"]
    assert [call.caller for call in log.aborts] == ["engine"]
    assert recorder.engine.aborted == "r1"


def test_a_call_made_inside_another_says_so() -> None:
    """cleanup called from within abort is recorded as made by the engine, inside abort."""

    class TearDown(SampleEngine):
        async def abort(self, context: Context) -> None:
            await self.cleanup()

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(TearDown())
        await start_engine(recorder)
        await recorder.abort(Context("r1"))
        return recorder

    recorder = asyncio.run(scenario())
    cleanup = next(call for call in recorder.calls if call.event is E.CLEANUP_CALLED)
    assert (cleanup.caller, cleanup.inside) == ("engine", "abort")


def test_a_plain_method_stays_plain_when_shadowed() -> None:
    """A synchronous helper the engine calls on itself still returns its value, not a coroutine."""

    class SyncCleanup(SampleEngine):
        def cleanup(self) -> str:  # type: ignore[override]
            return "done"

        def shutdown(self) -> str:
            return self.cleanup()

    engine = SyncCleanup()
    recorder = RecordingEngine(engine)
    assert engine.shutdown() == "done"
    assert events(recorder) == [E.CLEANUP_CALLED, E.CLEANUP_OK]


def test_a_slotted_engine_is_still_recorded_from_the_runtime_side() -> None:
    """Without an instance dict nothing can be shadowed; runtime calls are recorded all the same."""

    class Slotted:
        __slots__ = ()

        async def start(self, worker_id: int) -> dict[str, str]:
            return {"model": "slotted"}

        def generate(self, request: dict[str, Any], context: Context) -> Any:
            raise NotImplementedError

        async def cleanup(self) -> None:
            pass

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(Slotted())
        await start_engine(recorder)
        await recorder.cleanup()
        return recorder

    assert events(asyncio.run(scenario())) == [E.START_CALLED, E.START_OK, E.CLEANUP_CALLED, E.CLEANUP_OK]


def test_a_setup_error_is_recorded_and_raised_unchanged() -> None:
    """A decode request without prefill_result fails at setup; the recorder passes the error on."""

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(SampleEngine(mode=Mode.DECODE))
        await start_engine(recorder)
        with pytest.raises(Exception, match="prefill_result"):
            await recorder.generate({"token_ids": [1]}, Context("r1"))
        return recorder

    log = asyncio.run(scenario()).requests["r1"]
    assert log.setup_error is not None and log.stream is None


def test_serving_before_start_is_a_lifecycle_breach() -> None:
    """generate before start is recorded as breaking LIFECYCLE-START-FIRST; the call still goes through."""

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(SampleEngine())
        stream = await recorder.generate({"token_ids": [1], "stop_conditions": {"max_tokens": 1}}, Context("r1"))
        assert len([item async for item in stream]) == 1
        return recorder

    recorder = asyncio.run(scenario())
    assert [(b.rule, b.phase) for b in recorder.breaches] == [("LIFECYCLE-START-FIRST", "Constructed")]


def test_first_token_is_the_earlier_of_a_token_chunk_and_a_side_channel_notice() -> None:
    """A notify_first_token() before any chunk counts as first-token (TRT-LLM style)."""

    class Notifying(SampleEngine):
        def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
            context.notify_first_token()
            return super().generate(request, context)

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(Notifying(mode=Mode.DECODE))
        await start_engine(recorder)
        adapter = EngineAdapter(recorder, Mode.DECODE)
        request = {"token_ids": [1], "prefill_result": {}, "stop_conditions": {"max_tokens": 2}}
        stream = await adapter.generate(request, Context("r1"))
        _ = [item async for item in stream]
        return recorder

    log = asyncio.run(scenario()).requests["r1"]
    notice = next(seq for seq, signal in log.signals if signal == "first_token")
    assert log.first_token_seq() == notice < log.items[0].seq


def test_a_dropped_stream_closes_the_engines_generator() -> None:
    """After the client drops the adapter's stream, the engine's generator has finished (its finally ran)."""

    async def scenario() -> RecordingEngine:
        recorder = RecordingEngine(SampleEngine())
        await start_engine(recorder)
        adapter = EngineAdapter(recorder, Mode.AGGREGATED)
        stream = await adapter.generate({"token_ids": [1], "stop_conditions": {"max_tokens": 50}}, Context("r1"))
        await stream.__anext__()
        assert recorder.requests["r1"].generator_still_open()
        await stream.aclose()
        await adapter.settle()
        return recorder

    log = asyncio.run(scenario()).requests["r1"]
    assert log.close_requested and not log.generator_still_open()
