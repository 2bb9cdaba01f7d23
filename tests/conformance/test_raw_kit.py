"""conform on raw engines (RawEngine, from Dynamo 1.3.1): Dynamo's sample diffusion engine passes;
a raw engine that ignores a stop fails RawStopIgnored (RAW-ABORT-IMMEDIATE)."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model.raw_engine import RAW_ABORT_IMMEDIATE
from dynamo_backend_protocol.reference import EngineConfig
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.conformance.raw_kit import RawReport, is_raw_engine, run_raw_conformance
from dynamo_backend_protocol.reference.conformance.run_loop import run_abandoning
from optional_tools import require_dynamo

SAMPLE = "dynamo.common.backend.sample_diffusion_engine:SampleDiffusionEngine"


class StopIgnoringRawEngine:
    """A raw engine whose generator streams progress objects for ten seconds whatever happens."""

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model="stubborn-diffusion")

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        for step in range(1000):
            await asyncio.sleep(0.01)
            yield {"progress": step}

    async def abort(self, context: Any) -> None:
        return None

    async def cleanup(self) -> None:
        return None


class StopHonouringRawEngine(StopIgnoringRawEngine):
    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        for step in range(3):
            if context.is_stopped():
                return
            await asyncio.sleep(0.01)
            yield {"progress": step}


def _statuses(engine: type) -> dict[str, bool | None]:
    report = asyncio.run(run_raw_conformance(engine, cancel_deadline=0.5))
    return {check.name: check.passed for check in report.checks}


def test_a_raw_engine_that_ignores_a_stop_fails_raw_stop_ignored() -> None:
    """RAW-ABORT-IMMEDIATE: stopped and aborted at once, the generator must end within the deadline."""
    assert RAW_ABORT_IMMEDIATE == "RAW-ABORT-IMMEDIATE"
    found = _statuses(StopIgnoringRawEngine)
    assert found["RawStopIgnored"] is False
    assert found["RawNoObjectYielded"] is True and found["AbortFailed"] is True
    assert all(_statuses(StopHonouringRawEngine).values())


def test_dynamo_sample_diffusion_engine_conforms_as_a_raw_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """conform on Dynamo's own RawEngine sample, as installed, through its from_args: every raw check passes."""
    require_dynamo()
    module, _, name = SAMPLE.partition(":")
    assert is_raw_engine(getattr(importlib.import_module(module), name))
    assert main(["conform", SAMPLE, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "raw" and report["ok"]
    assert {check["status"] for check in report["checks"]} == {"passed"}
    assert "RawStopIgnored" in {check["name"] for check in report["checks"]}


def test_a_mode_for_a_raw_engine_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    require_dynamo()
    assert main(["conform", SAMPLE, "--mode", "decode"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "is a raw engine" in line


class CancellationSwallowingRawEngine(StopIgnoringRawEngine):
    """Streams for ever and swallows the cancellation a bounded read sends it, as a wedged engine would."""

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        step = 0
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue
            step += 1
            yield {"progress": step}


def test_a_raw_engine_that_swallows_cancellation_still_fails_at_its_bound() -> None:
    """FAULT-KIT-BOUNDED for raw engines: the read that reaches the deadline abandons work that will not be
    cancelled, so the run ends with a verdict instead of waiting on the engine for ever."""
    # conform's own runner (asyncio.run would wait at its close for the work the kit abandoned), in a daemon
    # thread so that a kit which does wait on the engine fails this test instead of hanging the suite.
    reports: list[RawReport] = []
    judge = threading.Thread(target=lambda: reports.append(run_abandoning(run_raw_conformance(
        CancellationSwallowingRawEngine, cancel_deadline=0.3, stream_timeout=0.5)).result()), daemon=True)
    judge.start()
    judge.join(timeout=20)
    assert reports, "the raw kit was still waiting on an engine that swallows its cancellation after 20 s"
    [report] = reports
    found = {check.name: check.passed for check in report.checks}
    assert found["RawNoObjectYielded"] is False  # the plain request never ends: its end is the terminal
