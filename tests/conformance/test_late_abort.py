"""AbortAfterTerminalRaised: the runtime may abort a request after its error terminal (the upstream
finding abort-after-error-item); an engine whose abort raises for a request it already finished fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.reference import EngineConfig, LLMEngine, cancelled, error, token
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.conformance.checks import Failure
from dynamo_backend_protocol.reference.conformance.kit import run_conformance
from dynamo_backend_protocol.reference.conformance.report import CheckStatus


class ErrorTerminalEngine(LLMEngine):
    """Ends every request with an error terminal; ``forgiving`` decides whether a late abort is taken quietly."""

    forgiving = False

    def __init__(self) -> None:
        self.live: dict[str, int] = {}

    async def start(self, worker_id: int) -> EngineConfig:
        return EngineConfig(model="error-terminal-model")

    def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        self.live[context.id()] = 0  # known from the call on, as a real engine's request table is
        return self._stream(request, context)

    async def _stream(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            limit = (request.get("stop_conditions") or {}).get("max_tokens") or 4
            for produced in range(limit):
                if context.is_stopped():
                    yield cancelled()
                    return
                await asyncio.sleep(0.001)
                if produced == limit - 1:
                    yield error("planned: the engine ran out of memory")
                    return
                yield token(produced)
        finally:
            self.live.pop(context.id(), None)

    async def abort(self, context: Any) -> None:
        if self.forgiving:
            self.live.pop(context.id(), None)
        else:
            del self.live[context.id()]  # KeyError for a request that already ended

    async def cleanup(self) -> None:
        self.live.clear()


class ForgivingErrorTerminalEngine(ErrorTerminalEngine):
    forgiving = True


def _result(engine: type[ErrorTerminalEngine]) -> tuple[CheckStatus, str]:
    report = asyncio.run(run_conformance(engine, examples=0))
    [found] = [result for result in report.checks if result.failure is Failure.ABORT_AFTER_TERMINAL_RAISED]
    return found.status, found.reason


def test_an_engine_that_raises_when_aborted_after_its_error_terminal_fails_the_named_check() -> None:
    status, reason = _result(ErrorTerminalEngine)
    assert status is CheckStatus.FAILED
    assert "its error terminal ('error: planned: the engine ran out of memory')" in reason
    assert "raised KeyError" in reason


def test_an_engine_that_takes_a_late_abort_quietly_passes_it() -> None:
    assert _result(ForgivingErrorTerminalEngine)[0] is CheckStatus.PASSED


def test_the_bundled_engine_passes_it(capsys: pytest.CaptureFixture[str]) -> None:
    """conform lists the check by name, and the bundled SampleEngine passes it."""
    assert main(["conform", "--quiet", "--examples", "0"]) == 0
    assert any(line.startswith("[pass] AbortAfterTerminalRaised") for line in capsys.readouterr().out.splitlines())
