"""The deployment recorder around an engine: what it writes, and that it changes nothing.

No Dynamo needed: the recorder is driven here by our reference adapter and context.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.traces.check import check_lines
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.runtime import RecordedEngine, RotatingJsonlSink, record

CHUNKS = [{"token_ids": [1], "index": 0}, {"token_ids": [2], "index": 0},
          {"token_ids": [3], "index": 0, "finish_reason": "length"}]


class ListEngine:
    """Yields the very chunk objects of ``CHUNKS``, or raises where told."""

    def __init__(self, fail_at: int | None = None, abort_raises: bool = False) -> None:
        self.fail_at = fail_at
        self.abort_raises = abort_raises
        self.disaggregation_mode = "decode"

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        for position, chunk in enumerate(CHUNKS):
            if position == self.fail_at:
                raise ValueError("engine fault")
            await asyncio.sleep(0)
            yield chunk

    async def abort(self, context: Any) -> None:
        if self.abort_raises:
            raise RuntimeError("abort fault")

    async def cleanup(self) -> None:
        return None


async def _read(engine: Any, name: str) -> list[Any]:
    return [chunk async for chunk in engine.generate({"token_ids": [1]}, Context(name))]


def test_off_the_recorder_is_the_engine_itself() -> None:
    engine = ListEngine()
    assert record(engine, None) is engine


def test_items_pass_through_as_the_very_objects_and_the_lines_check() -> None:
    lines: list[dict[str, Any]] = []
    recorded = record(ListEngine(), lines.append, Mode.AGGREGATED)
    got = asyncio.run(_read(recorded, "r1"))
    assert all(a is b for a, b in zip(got, CHUNKS, strict=True))
    assert [line["obs"] for line in lines] == ["engine.generate", "engine.setup", "engine.item", "engine.item",
                                               "engine.item", "engine.end"]
    assert lines[-2]["item"] == "terminal:length+tokens"
    assert all(isinstance(line["t"], float) for line in lines)
    assert check_lines([json.dumps(line) for line in lines]).ok


def test_the_engines_errors_pass_through_unchanged_and_are_recorded() -> None:
    lines: list[dict[str, Any]] = []
    recorded = record(ListEngine(fail_at=1), lines.append)
    with pytest.raises(ValueError, match="engine fault"):
        asyncio.run(_read(recorded, "r1"))
    assert lines[-1]["obs"] == "engine.raise" and lines[-1]["error"] == "ValueError"
    assert lines[0]["mode"] == "decode"  # the engine's own disaggregation_mode


class CancelsItself(ListEngine):
    """Raises CancelledError from its own stream, with nobody cancelling the reader."""

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        yield CHUNKS[0]
        raise asyncio.CancelledError


def test_a_cancellation_the_engine_raised_itself_is_its_stream_failing_not_a_cancelled_read() -> None:
    """As the model's stream_fault says (and the adapter's own observers record it): the runtime cancelling a
    read is engine.cancel; an engine raising CancelledError on its own is engine.raise."""
    lines: list[dict[str, Any]] = []

    async def read_it() -> None:
        with pytest.raises(asyncio.CancelledError):
            await _read(record(CancelsItself(), lines.append, Mode.AGGREGATED), "own")

    asyncio.run(read_it())
    assert lines[-1]["obs"] == "engine.raise" and lines[-1]["error"] == "CancelledError"


def test_the_runtime_cancelling_a_read_is_recorded_as_a_cancelled_read() -> None:
    """The reading task cancelled while it waits for the next item: the consumer went away, engine.cancel."""
    lines: list[dict[str, Any]] = []

    class Stalls(ListEngine):
        async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
            yield CHUNKS[0]
            await asyncio.Event().wait()
            yield CHUNKS[1]

    async def cancel_the_reader() -> None:
        reader = asyncio.ensure_future(_read(record(Stalls(), lines.append, Mode.AGGREGATED), "stalled"))
        for _ in range(1000):  # the first item comes within a few turns of the loop
            if any(line["obs"] == "engine.item" for line in lines):
                break
            await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    asyncio.run(cancel_the_reader())
    assert lines[-1]["obs"] == "engine.cancel"


def test_a_raising_abort_still_raises_and_is_recorded_after_the_abort() -> None:
    lines: list[dict[str, Any]] = []
    recorded = record(ListEngine(abort_raises=True), lines.append, Mode.AGGREGATED)

    async def stop_then_abort() -> None:
        context = Context("r1")
        stream = recorded.generate({"token_ids": [1]}, context)
        await stream.__anext__()
        context.stop_generating()
        with pytest.raises(RuntimeError, match="abort fault"):
            await recorded.abort(context)

    asyncio.run(stop_then_abort())
    assert [line["obs"] for line in lines][-3:] == ["context.stop", "engine.abort", "engine.abort_raised"]


def test_a_failing_sink_is_isolated_per_request_and_never_reaches_the_engine() -> None:
    """FAULT-SINK-ISOLATED: the stream is whole, the failure counted once for the request, its
    later lines dropped; the next request is recorded again."""
    written: list[dict[str, Any]] = []

    def sink(line: dict[str, Any]) -> None:
        if line["request"] == "r1" and line["obs"] == "engine.item":
            raise OSError("disk full")
        written.append(line)

    recorded = record(ListEngine(), sink, Mode.AGGREGATED)
    assert isinstance(recorded, RecordedEngine)
    assert len(asyncio.run(_read(recorded, "r1"))) == len(CHUNKS)
    assert len(asyncio.run(_read(recorded, "r2"))) == len(CHUNKS)
    assert recorded.sink_failures == 1
    assert [line["obs"] for line in written if line["request"] == "r1"] == ["engine.generate", "engine.setup"]
    assert sum(1 for line in written if line["request"] == "r2") == 6


def test_the_recorder_under_our_adapter_writes_a_trace_that_conforms(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    sink = RotatingJsonlSink(path)
    recorded = record(ListEngine(), sink, Mode.AGGREGATED)

    async def serve() -> None:
        adapter = EngineAdapter(recorded, Mode.AGGREGATED)
        for name in ("a", "b"):
            stream = await adapter.generate({"token_ids": [1]}, Context(name))
            async for _ in stream:
                pass

    asyncio.run(serve())
    sink.close()
    report = check_lines(path.read_text(encoding="utf-8").splitlines())
    assert report.ok and report.total == 2


def test_the_file_sink_rotates_and_keeps_at_most_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    sink = RotatingJsonlSink(path, max_bytes=2_000, backups=2)
    for number in range(500):
        sink({"request": f"r{number}", "obs": "engine.generate", "mode": "agg"})
    sink.close()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    assert all((tmp_path / name).stat().st_size <= 2_000 for name in kept)
    assert '"r499"' in path.read_text(encoding="utf-8").splitlines()[-1]


def test_a_dynamo_raw_engine_is_refused_rather_than_served_through_the_wrong_adapter() -> None:
    raw_engine = type("RawEngine", (), {"__module__": "dynamo.common.backend.engine"})
    diffusion = type("DiffusionEngine", (raw_engine,), {})
    with pytest.raises(TypeError, match="RawEngine"):
        record(diffusion(), lambda line: None)
