"""A production engine through the kit: Dynamo's ``TokenspeedLLMEngine``, from the installed ``ai-dynamo``,
unchanged, over our stand-in for its GPU library (tests/conformance/standins/tokenspeed).

With a library that ends an aborted request's stream, every check Dynamo's runtime exercises passes in agg,
prefill and decode, and only upstream's CancellationNotObserved fails, reported as upstream's (the engine
cancels through abort(), which upstream's kit never calls).  With a library that forgets an aborted request,
ignores abort_request, or finishes normally after it, a named runtime-kit check fails.  Skipped outside CI
when Dynamo's packages are absent; failed in CI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.reference import ConformanceCheck, ConformanceReport, cli, run_conformance
from dynamo_backend_protocol.reference.conformance.checks import Kit
from optional_tools import require_dynamo, require_modules

C = ConformanceCheck
ENGINE = "dynamo.tokenspeed.llm_engine:TokenspeedLLMEngine"
STANDINS = Path(__file__).resolve().parent / "standins"
NOT_APPLICABLE = ("skipped: applies to", "skipped: does not apply to")
DEADLINE = 0.5
RUNTIME_CHECKS = {
    C.MALFORMED_CHUNK, C.ABORT_FAILED, C.ABORTED_STREAM_NOT_ENDED, C.KILL_NOT_HANDLED_LIKE_STOP, C.ABORT_CALLED_TWICE,
    C.ABORT_ON_CLEAN_COMPLETION, C.ABORT_BEFORE_FIRST_TOKEN, C.ABORT_BEFORE_FIRST_READ_LOST,
    C.DROPPED_STREAM_NOT_CLOSED, C.LIFECYCLE_ORDER_VIOLATED, C.CANCELLATION_LEAKED,
    C.MID_STREAM_CANCELLATION_IGNORED, C.SCHEDULE_FAILED, C.ABORT_AFTER_TERMINAL_RAISED,
}
"""The checks upstream's kit lacks, run as Dynamo's runtime drives the engine (written out, not read back)."""


@pytest.fixture
def tokenspeed_engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The engine class, importing our stand-in as ``tokenspeed``; the prefill worker advertises loopback, which
    TokenSpeed allows only when told to (as on a single host)."""
    require_dynamo()
    require_modules("yaml", install="pip install pyyaml (the engine's arguments need it)")
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setenv("DYN_TOKENSPEED_BOOTSTRAP_HOST", "127.0.0.1")
    import importlib

    return importlib.import_module("dynamo.tokenspeed.llm_engine").TokenspeedLLMEngine


def conform(engine: Any, engine_args: str, examples: int = 3) -> ConformanceReport:
    return asyncio.run(run_conformance(engine, engine_args=engine_args, examples=examples, cancel_deadline=DEADLINE))


@pytest.mark.parametrize("mode", ["agg", "prefill", "decode"])
def test_with_a_library_that_ends_aborted_streams_every_runtime_check_passes(tokenspeed_engine: Any, mode: str) -> None:
    """No runtime-kit check is skipped (bar another mode's) and none fails; decode requests carry the
    bootstrap_info Dynamo's router would give them, with no extra flag; the one-token prefill is no false
    alarm.  Upstream's CancellationNotObserved fails where the engine streams on without abort(), as upstream's."""
    flag = "" if mode == "agg" else f"--disaggregation-mode {mode}"
    report = conform(tokenspeed_engine, f"{flag} --standin-abort ends")
    assert report.mode.value == mode
    judged = {r.failure: r for r in report.checks if r.kit is Kit.RUNTIME and not r.reason.startswith(NOT_APPLICABLE)}
    assert all(result.passed for result in judged.values()), report.render()
    assert set(judged) == RUNTIME_CHECKS - (set() if mode == "decode" else {C.ABORT_BEFORE_FIRST_TOKEN})
    expected_upstream = set() if mode == "prefill" else {C.CANCELLATION_NOT_OBSERVED}
    assert {r.failure for r in report.failures_in(Kit.UPSTREAM)} == expected_upstream, report.render()
    if mode == "decode":
        assert "bootstrap_info from its advertised bootstrap endpoint" in report.requests
        assert "prefill_result from a prefill run of the same engine" in report.requests


@pytest.mark.parametrize(
    ("behaviour", "failure", "words"),
    [
        ("forgets", C.ABORTED_STREAM_NOT_ENDED, "left waiting for ever"),
        ("ignores", C.MID_STREAM_CANCELLATION_IGNORED, "it kept streaming"),
        ("finishes", C.MID_STREAM_CANCELLATION_IGNORED, "ended as if nobody had stopped it"),
    ],
)
def test_a_library_that_loses_the_abort_fails_a_named_runtime_check(
    tokenspeed_engine: Any, behaviour: str, failure: ConformanceCheck, words: str
) -> None:
    """Even with the property-based phase off, the check naming what the library did fails, its reason saying
    that abort() was called and returned; nothing of the runtime kit is skipped behind upstream's failure."""
    report = conform(tokenspeed_engine, f"--standin-abort {behaviour}", examples=0)
    result = report.result(failure)
    assert result.failed and words in result.reason and "abort() was called once and returned" in result.reason
    skipped = [r.failure for r in report.checks if r.kit is Kit.RUNTIME and r.skipped
               and not r.reason.startswith(NOT_APPLICABLE) and r.failure is not C.SCHEDULE_FAILED]
    assert skipped == []


def test_the_json_report_says_which_kit_fails(tokenspeed_engine: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--json carries each check's kit and the failures by kit: upstream's kit fails, the runtime's does not."""
    code = cli.main(["conform", ENGINE, "--engine-args=--standin-abort ends", "--examples", "0", "--json",
                     "--cancel-deadline", str(DEADLINE)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["failed_by_kit"] == {"upstream": ["CancellationNotObserved"], "runtime": []}
    kits = {check["failure"]: check["kit"] for check in report["checks"]}
    assert kits["CancellationNotObserved"] == "upstream" and kits["AbortedStreamNotEnded"] == "runtime"
