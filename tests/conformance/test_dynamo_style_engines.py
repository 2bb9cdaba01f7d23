"""Engines written against Dynamo's conventions run through the kit unchanged: built by ``from_args``
with ``--engine-args`` in the mode they declare, one-chunk prefill and encode roles, decode fed a real
prefill hand-off, requests naming start()'s model, and Dynamo's finish reasons judged as Dynamo does."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import dynamo_style_engines as style
import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import (
    CheckStatus,
    ConformanceCheck,
    ConformanceReport,
    EngineFactoryError,
    assert_conforms,
    cli,
    run_conformance,
)

C = ConformanceCheck
STYLE = "dynamo_style_engines"


def conform(factory: Any, **options: Any) -> ConformanceReport:
    options.setdefault("cancel_deadline", 0.3)
    options.setdefault("examples", 5)
    return asyncio.run(run_conformance(factory, **options))


def failed(report: ConformanceReport) -> set[str]:
    return {r.failure for r in report.checks if r.status is CheckStatus.FAILED}


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_a_from_args_engine_is_checked_in_the_mode_its_arguments_give_it(mode: Mode) -> None:
    """Built through from_args, the engine serves the role --disaggregation-mode gave it, and the kit
    checks that role: its prefill hands off one eos token, its decode accepts only a real hand-off,
    it ends stopped streams with 'abort', and it refuses requests for another model."""
    report = conform(style.FromArgsEngine, engine_args=f"--disaggregation-mode {mode.value}")
    assert report.mode is mode
    assert report.ok, report.render()


def test_decode_requests_carry_the_hand_off_of_a_prefill_run_of_the_same_engine() -> None:
    """The engine refuses a synthetic prefill_result, so a passing GenerateFailed means the kit ran its
    prefill role and forwarded the terminal's disaggregated_params, as Dynamo's PrefillRouter does."""
    report = conform(style.FromArgsEngine, engine_args=["--disaggregation-mode", "decode"], examples=0)
    assert report.result(C.GENERATE_FAILED).passed, report.render()


@pytest.mark.parametrize("reason", ["eos", "stop", "length", "content_filter", "error", "error: boom"])
def test_every_dynamo_finish_reason_ends_a_conforming_stream(reason: str) -> None:
    """Dynamo reads each of these as a terminal, so the kit does too: no MalformedChunk, no
    NoTerminalChunk, and (with 'abort' after a stop) every cancellation check passes."""
    report = conform(functools.partial(style.FinishReasonEngine, reason=reason))
    assert report.ok, report.render()


def test_a_mode_that_disagrees_with_the_declared_one_is_refused() -> None:
    """Checking an agg engine 'in prefill mode' would mean nothing: the kit says which mode it serves."""
    with pytest.raises(EngineFactoryError, match="serves agg"):
        conform(style.FromArgsEngine, mode=Mode.PREFILL, engine_args="")


def test_assert_conforms_takes_engine_args() -> None:
    """From a plain test, the same options as run_conformance."""
    assert_conforms(style.FromArgsEngine, engine_args="--disaggregation-mode encode --max-tokens 3", examples=0)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["conform", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_builds_from_args_with_engine_args(capsys: pytest.CaptureFixture[str]) -> None:
    """``conform ENGINE --engine-args "..."`` passes, in the declared mode, without --mode."""
    code, out, _ = run_cli([f"{STYLE}:FromArgsEngine", "--engine-args", "--disaggregation-mode prefill",
                            "--examples", "3"], capsys)
    assert code == 0, out
    assert "conforms (mode prefill)" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--engine-args", "--disaggregation-mode decode", "--mode", "agg"], "mode agg was asked for, but"),
        (["--engine-args", "--disaggregation-mode sideways"], "invalid choice: 'sideways'"),
        (["--engine-args", "--max-tokens 'unclosed"], "cannot be split"),
    ],
    ids=["mode-disagrees", "rejected-by-from-args", "bad-quoting"],
)
def test_unusable_engine_arguments_are_one_line_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake: one line on stderr naming it, exit 2, nothing on stdout."""
    code, out, err = run_cli([f"{STYLE}:FromArgsEngine", *argv], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert words in err


def test_engine_args_for_an_engine_without_from_args_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Arguments nobody would read are a mistake, not silently dropped."""
    code, _, err = run_cli([f"{STYLE}:OneChunkPrefillEngine", "--engine-args=--foo"], capsys)
    assert code == 2
    assert "no from_args" in err


@pytest.mark.parametrize("engine", [style.OneChunkPrefillEngine, style.OneChunkEncodeEngine], ids=str)
def test_a_one_chunk_engine_that_honours_cancellation_passes(engine: type) -> None:
    """A prefill clamped to one token or an encode hand-off has no second chunk to stop it at: the kit
    stops it before its first read instead, and a correct engine passes every check of its mode."""
    report = conform(engine)
    assert report.ok, report.render()
    assert report.result(C.ABORTED_STREAM_NOT_ENDED).passed


@pytest.mark.parametrize(
    "engine", [style.StopIgnoringPrefillEngine, style.StopIgnoringEncodeEngine], ids=str
)
def test_the_same_one_chunk_engine_finishing_its_one_step_after_a_stop_is_judged_finished(engine: type) -> None:
    """A prefill clamped to one token or an encode hand-off is one step of work, which may be done before a
    stop could act: ending with its normal terminal is a finished request, not an ignored stop (issue 22;
    before it, CancellationIgnored failed here)."""
    report = conform(engine)
    assert failed(report) == set(), report.render()
    assert report.result(C.CANCELLATION_IGNORED).passed and report.result(C.MID_STREAM_CANCELLATION_IGNORED).passed


def test_concurrent_encode_requests_each_need_their_own_well_formed_hand_off() -> None:
    """As upstream's kit: each of the eight interleaved encode requests is judged by the encode suite,
    so a shared encoder that serves one request at a time is caught, naming the broken part."""
    report = conform(style.OneEncoderAtATimeEngine)
    # The random schedules, running requests side by side too, meet the same refusal.
    assert failed(report) == {C.CONCURRENT_GENERATE_FAILED, C.SCHEDULE_FAILED}
    assert "EncoderResultExpectedObject" in report.result(C.CONCURRENT_GENERATE_FAILED).reason


def test_decode_requests_get_bootstrap_info_when_the_prefill_engine_advertises_a_bootstrap_endpoint() -> None:
    """As Dynamo's PrefillRouter on its bootstrap path: the prefill request and every decode request carry
    bootstrap_info (host and port from the prefill engine's start(), a room), and prefill_result carries the
    disaggregated_params of the prefill's first, non-terminal chunk.  The decode engine refuses anything else."""
    report = conform(functools.partial(style.BootstrapHandoffEngine, mode="decode"), examples=3)
    assert report.ok, report.render()
    assert "bootstrap_info from its advertised bootstrap endpoint" in report.requests
    assert "prefill_result from a prefill run of the same engine" in report.requests


def test_a_prefill_engine_advertising_a_bootstrap_endpoint_gets_bootstrap_info_on_its_requests() -> None:
    """Checked in prefill mode, the engine that refuses requests without bootstrap_info conforms: the kit
    sends what the router would, for the endpoint start() advertised."""
    report = conform(functools.partial(style.BootstrapHandoffEngine, mode="prefill"), examples=3)
    assert report.ok, report.render()
    assert "bootstrap_info for the bootstrap endpoint start() advertised" in report.requests
