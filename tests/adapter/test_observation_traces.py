"""Observation traces: what crossed the adapter's boundaries, checked against the model by ``trace``.

Each planted fault makes the adapter do something other than what its own
machine decided; its step trace would still conform, so only observations
recorded at the boundaries can catch it, and ``trace`` must name the line.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode, RequestMachine, parse_event
from dynamo_backend_protocol.model.machine import step_record
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS
from dynamo_backend_protocol.model.traces.check import check_lines
from dynamo_backend_protocol.model.traces.observed import ObservationDivergence
from dynamo_backend_protocol.reference import (
    Annotated,
    Context,
    EngineAdapter,
    JsonlTraceWriter,
    cancelled,
    stop,
    token,
)
from dynamo_backend_protocol.reference import adapter as adapter_module
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.differential.plays import make_play
from dynamo_backend_protocol.reference.differential.reference_side import ReferenceSide

REQUEST: dict[str, Any] = {"token_ids": [1]}
Driver = adapter_module._RequestDriver


class StoppableEngine:
    """Two tokens and a stop, or a cancelled terminal once the request is stopped."""

    def __init__(self) -> None:
        self.aborts = 0

    async def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        yield token(1)
        if context.is_stopped():
            yield cancelled()
            return
        yield token(2)
        yield stop()

    async def abort(self, context: Context) -> None:
        self.aborts += 1


Client = Callable[[EngineAdapter, Context], Coroutine[Any, Any, None]]


async def read_all(adapter: EngineAdapter, context: Context) -> None:
    async for _ in await adapter.generate(REQUEST, context):
        pass


async def stop_after_first(adapter: EngineAdapter, context: Context) -> None:
    async for _ in await adapter.generate(REQUEST, context):
        context.stop_generating()


async def drop_after_first(adapter: EngineAdapter, context: Context) -> None:
    stream = await adapter.generate(REQUEST, context)
    await anext(stream)
    await stream.aclose()


def traced(client: Client, mode: Mode = Mode.AGGREGATED) -> list[str]:
    """The observation trace of one request played by ``client``."""
    out = io.StringIO()

    async def play() -> None:
        adapter = EngineAdapter(StoppableEngine(), mode, trace_sink=JsonlTraceWriter(out))
        await client(adapter, Context("r1"))
        await adapter.settle()

    asyncio.run(play())
    return out.getvalue().splitlines()


def line_of(lines: list[str], obs: str, **fields: object) -> int:
    """The 1-based number of the first line observing ``obs`` (with ``fields``)."""
    for number, text in enumerate(lines, start=1):
        record = json.loads(text)
        if record["obs"] == obs and all(record.get(key) == value for key, value in fields.items()):
            return number
    raise AssertionError(f"no {obs} {fields} in {lines}")


def divergence_of(lines: list[str]) -> ObservationDivergence:
    [summary] = check_lines(lines).requests
    assert isinstance(summary.divergence, ObservationDivergence), summary
    return summary.divergence


def cli_output(lines: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    code = main(["trace", str(path)])
    return code, capsys.readouterr().out


def test_an_abort_skipped_in_agg_is_named_at_the_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The adapter's machine says call_abort and its step trace shows it, but the engine never hears it."""

    async def skip(self: EngineAdapter, context: Context) -> None:
        return None

    monkeypatch.setattr(EngineAdapter, "_abort", skip)
    lines = traced(stop_after_first)
    stop_line = line_of(lines, "context.stop")
    found = divergence_of(lines)
    assert (found.line, found.observation, found.rule) == (stop_line, "engine.abort", "ABORT-IMMEDIATE")
    code, out = cli_output(lines, tmp_path, capsys)
    assert code == 1
    assert f"line {stop_line}: engine.abort" in out and "rule ABORT-IMMEDIATE" in out


def test_a_terminal_not_yielded_is_named_where_the_stream_ended(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The consumer's stream ends without the terminal the engine yielded: the client cannot tell why it ended."""
    run = Driver.run

    async def without_terminal(self: Any) -> AsyncIterator[Annotated]:
        async for item in run(self):
            if item.data is None or "finish_reason" not in item.data:
                yield item

    monkeypatch.setattr(Driver, "run", without_terminal)
    lines = traced(read_all)
    found = divergence_of(lines)
    assert found.line == line_of(lines, "client.end")
    assert found.owed_at == line_of(lines, "engine.item", item="terminal:stop")
    assert found.rule == "STREAM-TERMINAL-LAST"
    code, out = cli_output(lines, tmp_path, capsys)
    assert code == 1 and f"line {found.line}: client.end" in out


def test_an_engine_stream_never_closed_is_named_at_the_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stop_reading performed on paper only: the engine's generator (its finally) is left to the garbage collector."""

    async def keep_open(self: Any) -> None:
        return None

    monkeypatch.setattr(Driver, "close_engine_stream", keep_open)
    lines = traced(read_all)
    terminal_line = line_of(lines, "engine.item", item="terminal:stop")
    found = divergence_of(lines)
    assert (found.line, found.observation, found.rule) == (terminal_line, "engine.close", "STREAM-TERMINAL-LAST")
    code, out = cli_output(lines, tmp_path, capsys)
    assert code == 1 and f"line {terminal_line}: engine.close" in out


def test_an_abort_on_a_silent_drop_is_named_at_the_abort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A consumer going away is not a cancellation: an abort then is the adapter's own invention."""
    ended_by = Driver.ended_by

    async def ended_by_with_abort(self: Any, ev: Any) -> None:
        await ended_by(self, ev)
        await self._adapter._abort(self.context)

    monkeypatch.setattr(Driver, "ended_by", ended_by_with_abort)
    lines = traced(drop_after_first)
    abort_line = line_of(lines, "engine.abort")
    found = divergence_of(lines)
    assert (found.line, found.observation, found.rule) == (abort_line, "engine.abort", "ABORT-NEEDS-CANCEL")
    code, out = cli_output(lines, tmp_path, capsys)
    assert code == 1 and f"line {abort_line}: engine.abort" in out


@pytest.mark.parametrize("client", [read_all, stop_after_first, drop_after_first], ids=lambda c: c.__name__)
def test_the_unplanted_adapter_conforms(client: Client) -> None:
    """The same runs without a planted fault: what the adapter did is what the model says."""
    report = check_lines(traced(client))
    assert report.ok, report.requests


@pytest.mark.parametrize("mode", list(Mode), ids=lambda mode: mode.value)
def test_every_teaching_scenario_conforms_as_observed(mode: Mode) -> None:
    """Each scenario played through the adapter (the differential's scripted engine and client) conforms
    in the observation format, every request ending in Done."""
    out = io.StringIO()
    plays = [make_play(found.name, found.parsed_events(), mode) for found in SCENARIOS if found.applies_to(mode)]

    async def play_all() -> None:
        side = ReferenceSide(mode)
        side.adapter = EngineAdapter(side.engine, mode, trace_sink=JsonlTraceWriter(out))
        for play in plays:
            await side.play(play)

    asyncio.run(play_all())
    report = check_lines(out.getvalue().splitlines())
    assert report.ok, [summary for summary in report.requests if not summary.conforms]
    assert report.total == len(plays)
    assert all(summary.state is not None and summary.state.control.value == "Done" for summary in report.requests)


def test_the_steps_format_still_validates_beside_observations() -> None:
    """Old step traces stay readable, in the same file as observation traces (detected per request)."""
    machine = RequestMachine(Mode.AGGREGATED)
    for name in ("setup", "token_chunk", "terminal:stop"):
        machine.fire(parse_event(name))
    steps = [json.dumps(step_record(step, "old")) for step in machine.history]
    report = check_lines([*steps, *traced(read_all)])
    assert report.ok
    assert [summary.request for summary in report.requests] == ["old", "r1"]
