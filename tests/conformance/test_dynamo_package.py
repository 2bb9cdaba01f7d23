"""Dynamo's own engine, from the installed ``ai-dynamo`` package, through ``conform`` unchanged.

``SampleLLMEngine`` is built the way Dynamo builds it (``from_args``, with
``--disaggregation-mode``), receives our Context, and must pass every check
that applies to its mode.  Skipped outside CI without the package; failed in CI.
"""

from __future__ import annotations

import json

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import cli
from optional_tools import require_dynamo

SAMPLE = "dynamo.common.backend.sample_engine:SampleLLMEngine"
NOT_APPLICABLE = ("skipped: applies to", "skipped: does not apply to")


def conform(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    require_dynamo()
    code = cli.main(["conform", SAMPLE, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_dynamos_sample_engine_conforms_in_the_mode_from_args_gives_it(
    mode: Mode, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every check is judged and passes, bar those of other modes: the KV event source checks run on
    its PushSource, prefill and encode are one-chunk streams, decode gets its own prefill's hand-off."""
    code, out, err = conform(["--engine-args", f"--disaggregation-mode {mode.value}", "--examples", "5", "--json"],
                             capsys)
    report = json.loads(out)
    assert (code, err, report["mode"], report["ok"]) == (0, "", mode.value, True), out
    skipped = {c["failure"]: c["reason"] for c in report["checks"] if c["status"] == "skipped"}
    assert all(reason.startswith(NOT_APPLICABLE) for reason in skipped.values()), skipped
    # The five encode checks outside encode, the decode-only one outside decode, CompletionTokensMismatch in encode.
    assert len(skipped) == {Mode.AGGREGATED: 6, Mode.PREFILL: 6, Mode.DECODE: 5, Mode.ENCODE: 2}[mode]


def test_asking_for_another_mode_than_the_engine_serves_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A prefill verdict on an agg engine would mean nothing: refused before any check runs."""
    code, out, err = conform(["--mode", "prefill", "--engine-args", "--disaggregation-mode agg"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "serves agg" in err, err


def test_a_decode_run_builds_dynamos_engine_at_most_three_times_and_starts_it_at_most_twice() -> None:
    """Through from_args too, the decode run (its prefill engine included) pays at most three builds and two
    starts: each is a weight load on a real backend."""
    require_dynamo()
    import asyncio
    import importlib
    from typing import Any

    from dynamo_backend_protocol.reference import run_conformance

    # Imported by name: mypy runs where Dynamo's packages may be absent.
    SampleLLMEngine: Any = importlib.import_module("dynamo.common.backend.sample_engine").SampleLLMEngine

    calls: list[str] = []

    class Counting(SampleLLMEngine):  # type: ignore[misc]
        @classmethod
        async def from_args(cls, argv: list[str] | None = None) -> Any:
            calls.append("built")
            return await super().from_args(argv)

        async def start(self, *args: Any) -> Any:
            calls.append("started")
            return await super().start(*args)

    report = asyncio.run(run_conformance(Counting, engine_args="--disaggregation-mode decode", examples=3))
    assert report.ok, report.render()
    assert calls.count("built") <= 3 and calls.count("started") <= 2, calls
