"""The conformance kit judges engines correctly: each broken engine fails its intended check (and only
the other checks that see the same bug, named below), its dependents are skipped, and SampleEngine passes
in every mode.

The expected skips are written out from the checks' documented prerequisites, not read back from the kit:
a check builds only on checks of its own kit (upstream's, or the runtime's through the adapter) and on the
engine having started; the runtime kit's request checks also need the engine to serve a plain request at
all.  A failure in one kit never skips a check of the other.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from dynamo_backend_protocol.model import Mode, Step
from dynamo_backend_protocol.reference import (
    CheckStatus,
    ConformanceCheck,
    ConformanceFailure,
    ConformanceReport,
    EngineFactoryError,
    SampleEngine,
    assert_conforms,
    run_conformance,
)
from dynamo_backend_protocol.reference.conformance import DEFAULT_EXAMPLES
from dynamo_backend_protocol.reference.conformance import broken_engines as broken

C = ConformanceCheck
FAST_DEADLINE = 0.2
"""Broken engines that never stop are given this long; keeps the suite quick."""

DECODE_ONLY = {C.ABORT_BEFORE_FIRST_TOKEN}
ENCODE_ONLY = {C.ENCODE_CHUNK_COUNT, C.ENCODE_TERMINAL_EXPECTED, C.ENCODE_TOKENS_NOT_EMPTY, C.ENCODE_USAGE_MISMATCH,
               C.ENCODER_RESULT_EXPECTED_OBJECT}
NOT_APPLICABLE = {
    Mode.AGGREGATED: DECODE_ONLY | ENCODE_ONLY,
    Mode.PREFILL: DECODE_ONLY | ENCODE_ONLY,
    Mode.DECODE: ENCODE_ONLY,
    Mode.ENCODE: DECODE_ONLY | {C.COMPLETION_TOKENS_MISMATCH},
}
"""What a SampleEngine-based engine is not judged on in each mode (it offers kv_event_sources, so those apply)."""
KV_SOURCES = {C.KV_EVENT_SOURCES_FAILED, C.KV_EVENT_SOURCES_NOT_IDEMPOTENT}
STREAM_SHAPE = {C.CHUNK_AFTER_TERMINAL, C.NO_TERMINAL_CHUNK}
UPSTREAM_AFTER_ONE_STREAM = {C.COMPLETION_TOKENS_MISMATCH, C.CONCURRENT_GENERATE_FAILED,
                             C.CANCELLATION_NOT_OBSERVED, C.CANCELLATION_IGNORED}
"""Upstream's checks that need its one plain stream to be well-shaped first."""
RUNTIME_REQUESTS = {
    C.MALFORMED_CHUNK, C.ABORT_FAILED, C.ABORTED_STREAM_NOT_ENDED, C.KILL_NOT_HANDLED_LIKE_STOP,
    C.ABORT_CALLED_TWICE, C.ABORT_ON_CLEAN_COMPLETION, C.ABORT_BEFORE_FIRST_READ_LOST, C.DROPPED_STREAM_NOT_CLOSED,
    C.CANCELLATION_LEAKED, C.MID_STREAM_CANCELLATION_IGNORED, C.SCHEDULE_FAILED, C.ABORT_AFTER_TERMINAL_RAISED,
}
"""The runtime kit's checks that send requests: skipped only when the engine serves none at all."""
NO_STREAM = {C.STREAM_YIELDED_ERROR, *STREAM_SHAPE, *UPSTREAM_AFTER_ONE_STREAM, *RUNTIME_REQUESTS}
AFTER_ENCODE_SUITE = {C.CONCURRENT_GENERATE_FAILED}
"""What needs encode mode's hand-off to be right first (each concurrent request must get one)."""
SCHEDULES = {C.SCHEDULE_FAILED}
"""The random schedules apply every rule, so they see again the bug of most runtime-kit engines."""

# failure -> (engine factory, mode, other checks failing on the same bug, checks skipped besides those of
# other modes, words in the reason)
CASES: dict[ConformanceCheck, tuple[Any, Mode, set[ConformanceCheck], set[ConformanceCheck], str]] = {
    C.START_FAILED: (broken.StartFailsEngine, Mode.AGGREGATED, set(),
                     {C.EMPTY_MODEL_IN_CONFIG, *KV_SOURCES, C.GENERATE_FAILED, C.NO_CHUNKS_YIELDED, *NO_STREAM},
                     "model store unreachable"),
    C.EMPTY_MODEL_IN_CONFIG: (broken.EmptyModelEngine, Mode.AGGREGATED, set(), set(), "model is ''"),
    C.GENERATE_FAILED: (broken.PromptKeyEngine, Mode.AGGREGATED, set(), {C.NO_CHUNKS_YIELDED, *NO_STREAM},
                        "KeyError: 'prompt'"),
    C.NO_CHUNKS_YIELDED: (broken.SilentEngine, Mode.AGGREGATED, set(), NO_STREAM, "without an item"),
    C.STREAM_YIELDED_ERROR: (broken.MidStreamErrorEngine, Mode.AGGREGATED, set(), NO_STREAM - {C.STREAM_YIELDED_ERROR},
                             "sampler state lost"),
    C.CHUNK_AFTER_TERMINAL: (broken.UsageAfterTerminalEngine, Mode.AGGREGATED, set(), UPSTREAM_AFTER_ONE_STREAM,
                             "came after the terminal"),
    C.NO_TERMINAL_CHUNK: (broken.NoFinishReasonEngine, Mode.AGGREGATED, set(),
                          {*UPSTREAM_AFTER_ONE_STREAM, *RUNTIME_REQUESTS}, "none with a finish_reason"),
    C.CONCURRENT_GENERATE_FAILED: (broken.SingleSlotEngine, Mode.AGGREGATED, SCHEDULES, set(), "engine busy"),
    # It ignores every stop, also through the adapter: the runtime kit's stop check names that too.
    C.CANCELLATION_NOT_OBSERVED: (broken.NeverStopsEngine, Mode.AGGREGATED, {C.MID_STREAM_CANCELLATION_IGNORED},
                                  {C.CANCELLATION_IGNORED}, "context.is_stopped()"),
    C.CANCELLATION_IGNORED: (broken.WrongCancelReasonEngine, Mode.AGGREGATED, {C.MID_STREAM_CANCELLATION_IGNORED},
                             set(), "'stop' instead of 'cancelled'"),
    C.CLEANUP_FAILED: (broken.CleanupRaisesEngine, Mode.AGGREGATED, set(), {C.SECOND_CLEANUP_FAILED},
                       "did not acknowledge shutdown"),
    C.SECOND_CLEANUP_FAILED: (broken.NonIdempotentCleanupEngine, Mode.AGGREGATED, set(), set(), "already closed"),
    C.CLEANUP_WITHOUT_START_FAILED: (broken.FragileCleanupEngine, Mode.AGGREGATED, set(), set(), "never-started"),
    C.KV_EVENT_SOURCES_FAILED: (broken.KvSourcesFailEngine, Mode.AGGREGATED, set(),
                                {C.KV_EVENT_SOURCES_NOT_IDEMPOTENT}, "no --kv-events-endpoint configured"),
    C.KV_EVENT_SOURCES_NOT_IDEMPOTENT: (broken.KvSourcesShiftEngine, Mode.AGGREGATED, set(), set(),
                                        "[0] and then [1]"),
    C.COMPLETION_TOKENS_MISMATCH: (broken.OvercountingEngine, Mode.AGGREGATED, set(), set(),
                                   "carried 8 token id(s) but its terminal reports completion_tokens 9"),
    C.ENCODE_CHUNK_COUNT: (broken.ProgressChunksEncodeEngine, Mode.ENCODE, set(), AFTER_ENCODE_SUITE, "got 2 items"),
    C.ENCODE_TERMINAL_EXPECTED: (broken.LengthFinishEncodeEngine, Mode.ENCODE, set(), AFTER_ENCODE_SUITE,
                                 "finish_reason is 'length'"),
    C.ENCODE_TOKENS_NOT_EMPTY: (broken.TokensInHandoffEncodeEngine, Mode.ENCODE, set(), AFTER_ENCODE_SUITE,
                                "carries 2 token id(s)"),
    C.ENCODE_USAGE_MISMATCH: (broken.CountsEmbeddingsEncodeEngine, Mode.ENCODE, set(), AFTER_ENCODE_SUITE,
                              "'completion_tokens': 16"),
    # The runtime kit's own chunk check sees the same bad hand-off.
    C.ENCODER_RESULT_EXPECTED_OBJECT: (broken.HandleOnlyEncodeEngine, Mode.ENCODE, {C.MALFORMED_CHUNK, *SCHEDULES},
                                       AFTER_ENCODE_SUITE, "is str, not an object"),
    C.MALFORMED_CHUNK: (broken.IntTokenEngine, Mode.AGGREGATED, SCHEDULES, set(), "'token_ids' must be a list"),
    C.ABORTED_STREAM_NOT_ENDED: (broken.StrandedByAbortEngine, Mode.AGGREGATED, SCHEDULES, set(),
                                 "left waiting for ever"),
    C.KILL_NOT_HANDLED_LIKE_STOP: (broken.KillIgnoringEngine, Mode.AGGREGATED, SCHEDULES, set(), "context.kill()"),
    C.ABORT_CALLED_TWICE: (broken.DoubleAbortEngine, Mode.AGGREGATED, SCHEDULES, set(), "self.abort"),
    C.ABORT_ON_CLEAN_COMPLETION: (broken.SelfStoppingEngine, Mode.AGGREGATED, SCHEDULES, set(),
                                  "context.stop_generating()"),
    C.ABORT_BEFORE_FIRST_TOKEN: (broken.EagerDecodeAbortEngine, Mode.DECODE, SCHEDULES, set(),
                                 "before its first token"),
    # Cancelling through abort() only, it fails upstream's stop check (upstream never calls abort()).
    C.ABORT_BEFORE_FIRST_READ_LOST: (broken.AbortOnlyOnceAdmittedEngine, Mode.AGGREGATED,
                                     {C.CANCELLATION_NOT_OBSERVED}, {C.CANCELLATION_IGNORED},
                                     "the abort was lost and the request ran on"),
    C.DROPPED_STREAM_NOT_CLOSED: (broken.LeakyProducerEngine, Mode.AGGREGATED, set(), set(),
                                  "LeakyProducerEngine._produce"),
    # Judged at the end, on the whole life of the engine every other check shared: nothing waits for it.
    C.LIFECYCLE_ORDER_VIOLATED: (broken.AbortTearsDownEngine, Mode.AGGREGATED, set(), set(),
                                 "cleanup (by the engine itself, inside abort)"),
    C.ABORT_FAILED: (broken.AbortRaisesEngine, Mode.AGGREGATED, set(),
                     {C.ABORTED_STREAM_NOT_ENDED, C.ABORT_AFTER_TERMINAL_RAISED},
                     "abort(context) raised KeyError"),
    C.CANCELLATION_LEAKED: (broken.SharedStopFlagEngine, Mode.AGGREGATED, set(), set(),
                            "keep the stop with its own request"),
    C.MID_STREAM_CANCELLATION_IGNORED: (broken.EarlyStopsOnlyEngine, Mode.AGGREGATED, set(), set(),
                                        "before every token"),
    C.SCHEDULE_FAILED: (broken.LateStopEngine, Mode.AGGREGATED, set(), set(), "after 2 chunks"),
    C.ABORT_AFTER_TERMINAL_RAISED: (broken.ForgetsFinishedRequestsEngine, Mode.AGGREGATED, set(), set(),
                                    "already ended with its terminal ('length') raised KeyError"),
}


def conform(factory: Any, mode: Mode = Mode.AGGREGATED, **options: Any) -> ConformanceReport:
    options.setdefault("cancel_deadline", FAST_DEADLINE)
    return asyncio.run(run_conformance(factory, mode=mode, **options))


def with_status(report: ConformanceReport, status: CheckStatus) -> set[str]:
    return {result.failure for result in report.checks if result.status is status}


def test_every_failure_name_has_a_broken_engine_and_a_case() -> None:
    """One deliberately broken engine per failure name, and this table covers them all."""
    assert set(broken.BROKEN_ENGINES) == set(ConformanceCheck) == set(CASES)
    assert all(broken.BROKEN_ENGINES[failure] is CASES[failure][0] for failure in CASES)


@pytest.mark.parametrize("failure", list(CASES), ids=str)
def test_broken_engine_fails_exactly_its_check(failure: ConformanceCheck) -> None:
    """The engine fails its intended check, with a reason naming the bug, and only the other checks that see
    the same bug; exactly its dependents are skipped."""
    engine, mode, also_failing, dependents, words = CASES[failure]
    report = conform(engine, mode)
    assert with_status(report, CheckStatus.FAILED) == {failure} | also_failing
    expected_skips = dependents | NOT_APPLICABLE[mode]
    assert with_status(report, CheckStatus.SKIPPED) == expected_skips
    assert words in report.result(failure).reason
    assert not report.ok


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_sample_engine_passes_every_check_in_every_mode(mode: Mode) -> None:
    """The bundled engine conforms; only the checks of other modes are skipped."""
    report = asyncio.run(run_conformance(functools.partial(SampleEngine, mode=mode), mode=mode))
    assert report.ok, report.render()
    expected_skips = NOT_APPLICABLE[mode]
    assert with_status(report, CheckStatus.SKIPPED) == expected_skips
    assert with_status(report, CheckStatus.PASSED) == set(ConformanceCheck) - expected_skips


def test_a_skip_names_the_failure_to_fix_first() -> None:
    """A check skipped because start failed says StartFailed, not something vaguer."""
    report = conform(broken.StartFailsEngine, examples=0)
    reason = report.result(C.CONCURRENT_GENERATE_FAILED).reason
    assert "StartFailed" in reason


def test_cleanup_after_a_start_that_raised_must_be_null_safe() -> None:
    """When start raises, cleanup still runs; if it is not null-safe, CleanupFailed says so."""

    class BrokenStartFragileCleanup(broken.FragileCleanupEngine):
        async def start(self, worker_id: int) -> Any:
            raise RuntimeError("GPU not found")

    report = conform(BrokenStartFragileCleanup, examples=0)
    # The same missing null check also breaks cleanup on a never-started engine.
    assert with_status(report, CheckStatus.FAILED) == {C.START_FAILED, C.CLEANUP_FAILED, C.CLEANUP_WITHOUT_START_FAILED}
    reason = report.result(C.CLEANUP_FAILED).reason
    assert "start that raised" in reason and "GPU not found" in reason and "null-safe" in reason


def test_zero_examples_skips_the_property_based_phase() -> None:
    """``examples=0`` turns the schedules off, reported as skipped (not passed)."""
    report = conform(SampleEngine, examples=0)
    result = report.result(C.SCHEDULE_FAILED)
    assert result.status is CheckStatus.SKIPPED and "0 examples" in result.reason


def test_the_property_based_phase_draws_at_most_the_requested_examples() -> None:
    """Each schedule starts with one warm-up request, so counting warm-ups bounds the draws."""
    warm_ups: list[str] = []

    def count(request: str, steps: Sequence[Step]) -> None:
        if request == "conformance-warm-up":
            warm_ups.append(request)

    conform(SampleEngine, examples=0, trace_sink=count)
    without = len(warm_ups)
    warm_ups.clear()
    conform(SampleEngine, examples=7, trace_sink=count)
    assert 1 <= len(warm_ups) - without <= 7


class CountingEngine(SampleEngine):
    """Counts how often the kit builds and starts it: a real engine pays for each with a weight load."""

    built: ClassVar[list[str]] = []
    started: ClassVar[list[str]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        CountingEngine.built.append("built")

    async def start(self, worker_id: int) -> Any:
        CountingEngine.started.append("started")
        return await super().start(worker_id)


@pytest.mark.parametrize(("mode", "examples"), [(Mode.AGGREGATED, DEFAULT_EXAMPLES), (Mode.AGGREGATED, 0),
                                                 (Mode.DECODE, 3)], ids=str)
def test_a_run_builds_at_most_three_engines_and_starts_at_most_two(mode: Mode, examples: int) -> None:
    """Whatever the examples, one run costs at most three constructions and two starts (the decode run's
    prefill engine included), so an engine that loads weights for minutes is checked in minutes."""
    CountingEngine.built.clear()
    CountingEngine.started.clear()
    report = conform(functools.partial(CountingEngine, mode=mode), mode, examples=examples)
    assert report.ok
    assert len(CountingEngine.built) <= 3 and len(CountingEngine.started) <= 2


def test_the_property_based_phase_is_deterministic() -> None:
    """Two runs on the same broken engine report the same shrunk schedule."""
    first = conform(broken.LateStopEngine).result(C.SCHEDULE_FAILED).reason
    second = conform(broken.LateStopEngine).result(C.SCHEDULE_FAILED).reason
    assert first == second
    assert first.startswith("schedule [request 1: ")


def test_raise_for_failures_lists_every_failed_check() -> None:
    """ConformanceFailure is an AssertionError carrying the report and naming the failures."""
    report = conform(broken.NoFinishReasonEngine, examples=0)
    with pytest.raises(ConformanceFailure) as caught:
        report.raise_for_failures()
    assert caught.value.report is report
    assert "NoTerminalChunk: the stream" in str(caught.value)
    assert "upstream's kit: fails NoTerminalChunk" in str(caught.value)
    assert isinstance(caught.value, AssertionError)


def test_a_conforming_report_raises_nothing() -> None:
    """raise_for_failures is silent when every check passed or was skipped."""
    conform(SampleEngine, examples=0).raise_for_failures()


def test_report_as_dict_is_json_with_one_entry_per_check() -> None:
    """The JSON form lists every check with status, reason and duration."""
    data = json.loads(json.dumps(conform(broken.NoFinishReasonEngine, examples=0).as_dict()))
    assert data["ok"] is False and data["mode"] == "agg"
    by_name = {check["failure"]: check for check in data["checks"]}
    assert set(by_name) == {str(c) for c in ConformanceCheck}
    assert by_name["NoTerminalChunk"]["status"] == "failed"
    assert by_name["ConcurrentGenerateFailed"]["status"] == "skipped"
    assert by_name["StartFailed"]["status"] == "passed" and by_name["StartFailed"]["reason"] == ""


def test_the_upstream_kits_checks_are_flagged_as_upstream() -> None:
    """The failure names of upstream's kit (PROTOCOL-NOTES, and testing.rs's KV and encode checks) are marked
    so in the JSON."""
    upstream = {"StartFailed", "EmptyModelInConfig", "GenerateFailed", "NoChunksYielded", "StreamYieldedError",
                "ChunkAfterTerminal", "NoTerminalChunk", "ConcurrentGenerateFailed", "CancellationNotObserved",
                "CancellationIgnored", "CleanupFailed", "SecondCleanupFailed", "CleanupWithoutStartFailed",
                "KvEventSourcesFailed", "KvEventSourcesNotIdempotent", "CompletionTokensMismatch", "EncodeChunkCount",
                "EncodeTerminalExpected", "EncodeTokensNotEmpty", "EncodeUsageMismatch", "EncoderResultExpectedObject"}
    checks = conform(SampleEngine, examples=0).as_dict()["checks"]
    assert isinstance(checks, list)
    assert {check["failure"] for check in checks if check["upstream"]} == upstream


def test_reasons_are_single_lines() -> None:
    """Every reason fits on one line, whatever the engine's error text holds."""

    class MultiLineError(SampleEngine):
        async def start(self, worker_id: int) -> Any:
            raise RuntimeError("first line\nsecond line\n\tthird")

    report = conform(MultiLineError, examples=0)
    assert all("\n" not in result.reason for result in report.checks)
    assert "first line second line third" in report.result(C.START_FAILED).reason


def test_trace_sink_receives_every_adapter_request() -> None:
    """Each request driven through the adapter reaches the trace sink, ended."""
    traces: list[tuple[str, Sequence[Step]]] = []
    conform(SampleEngine, examples=3, trace_sink=lambda request, steps: traces.append((request, list(steps))))
    names = [request for request, _ in traces]
    assert "conformance-well-formed" in names and "conformance-kill" in names
    assert all(steps[-1].after.control.value == "Done" for _, steps in traces)


def test_a_mode_may_be_given_by_name() -> None:
    """``mode="decode"`` works like Mode.DECODE (parsing is the model's, aliases included)."""
    factory = functools.partial(SampleEngine, mode=Mode.DECODE)
    report = asyncio.run(run_conformance(factory, mode=" Decode ", cancel_deadline=FAST_DEADLINE, examples=0))
    assert report.mode is Mode.DECODE and report.ok


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        (42, "not an engine class or factory"),
        (SampleEngine(), "engine instance"),
        (dict, "without start, generate, cleanup"),
        (lambda: object(), "lacks start, generate, cleanup"),
        (type("NoCleanup", (), {"start": lambda self: None, "generate": lambda self, r, c: None}), "without cleanup"),
        (functools.partial(SampleEngine, model_name=""), "model_name must not be empty"),
    ],
    ids=["int", "instance", "class-not-engine", "factory-returns-object", "class-missing-cleanup",
         "factory-raises"],
)
def test_an_unusable_factory_is_refused_before_any_check(factory: Any, words: str) -> None:
    """Not callable, an instance, or something that makes no engine: one typed error saying which."""
    with pytest.raises(EngineFactoryError) as caught:
        conform(factory)
    assert words in str(caught.value)


@pytest.mark.parametrize("options", [{"cancel_deadline": 0}, {"examples": -1}], ids=["deadline", "examples"])
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    """A deadline must be positive and examples non-negative."""
    with pytest.raises(ValueError, match=next(iter(options))):
        conform(SampleEngine, **options)


def test_assert_conforms_passes_silently_for_a_conforming_engine() -> None:
    """The one-liner for a user's own suite."""
    assert_conforms(SampleEngine, examples=0)


def test_assert_conforms_raises_with_the_report_for_a_broken_engine() -> None:
    """The failure names the check that failed."""
    with pytest.raises(ConformanceFailure, match="NoChunksYielded"):
        assert_conforms(broken.SilentEngine, examples=0)


def test_assert_conforms_inside_an_event_loop_points_to_the_async_form() -> None:
    """In an async test the blocking helper cannot run; the error says what to use."""

    async def inside() -> None:
        assert_conforms(SampleEngine)

    with pytest.raises(RuntimeError, match="run_conformance"):
        asyncio.run(inside())


def test_default_examples_keep_the_bundled_run_quick() -> None:
    """The default draws a bounded number of schedules (the CLI promise: well under 5 s)."""
    assert 0 < DEFAULT_EXAMPLES <= 100


class SlowAbortEngine(SampleEngine):
    """abort waits on something that never comes."""

    async def abort(self, context: Any) -> None:
        await asyncio.Event().wait()


def test_an_abort_that_overruns_the_deadline_fails_abort_failed() -> None:
    """An abort the runtime waits on forever holds the request's slot: AbortFailed, naming the deadline."""
    report = conform(SlowAbortEngine, examples=0)
    assert with_status(report, CheckStatus.FAILED) == {C.ABORT_FAILED}
    assert f"did not return within {FAST_DEADLINE:g} s" in report.result(C.ABORT_FAILED).reason


class SlowStartEngine(SampleEngine):
    """start takes longer than the kit is told to wait."""

    async def start(self, worker_id: int) -> Any:
        await asyncio.sleep(5)
        return await super().start(worker_id)


def test_a_start_past_the_start_timeout_fails_start_failed_and_passes_nothing_that_needs_it() -> None:
    """A start cut short leaves nothing to judge: StartFailed names the timeout, and cleanup and lifecycle
    checks are skipped, not passed (only cleanup of the never-started engine is still judged)."""
    report = conform(SlowStartEngine, examples=0, start_timeout=0.2)
    assert with_status(report, CheckStatus.FAILED) == {C.START_FAILED}
    assert "--start-timeout" in report.result(C.START_FAILED).reason
    assert with_status(report, CheckStatus.PASSED) == {C.CLEANUP_WITHOUT_START_FAILED}
    assert "StartFailed failed" in report.result(C.CLEANUP_FAILED).reason


class AbortBreaksEverythingEngine(SampleEngine):
    """After its first abort the engine refuses every request, as one that freed the whole KV cache would."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    async def abort(self, context: Any) -> None:
        self.broken = True

    def generate(self, request: dict[str, Any], context: Any) -> Any:
        if self.broken:
            raise RuntimeError("no KV cache")
        return super().generate(request, context)


def test_a_check_that_leaves_the_engine_unable_to_serve_skips_the_rest_with_that_reason() -> None:
    """The shared engine broke: the first check after it fails, and the later ones that need it serving are
    skipped saying it stopped, rather than each failing for that one reason; cleanup is still judged."""
    report = conform(AbortBreaksEverythingEngine, examples=3)
    failed = with_status(report, CheckStatus.FAILED)
    assert len(failed) == 1
    later = report.result(C.SCHEDULE_FAILED)
    assert later.skipped and "the engine stopped serving" in later.reason and "no KV cache" in later.reason
    assert report.result(C.CLEANUP_FAILED).passed


class StopsOnlyBeforeFirstTokenEngine(broken.EarlyStopsOnlyEngine):
    """Looks at context.is_stopped() before its first token only (the commonest real bug); abort() is a no-op."""

    def _stream(self, request: dict[str, Any], context: Any) -> Any:
        return self.stream_until(request, lambda produced: produced == 0 and context.is_stopped())


def test_an_engine_ignoring_stops_after_its_first_token_fails_the_check_naming_that() -> None:
    """MidStreamCancellationIgnored fails, saying abort() was called and returned and the engine streamed on;
    the checks about abort() (a stream left waiting, a kill handled worse than a stop) do not blame abort()."""
    report = conform(StopsOnlyBeforeFirstTokenEngine, examples=0)
    result = report.result(C.MID_STREAM_CANCELLATION_IGNORED)
    assert result.failed, report.render()
    assert "abort() was called once and returned" in result.reason and "it kept streaming" in result.reason
    assert with_status(report, CheckStatus.FAILED) == {C.MID_STREAM_CANCELLATION_IGNORED}
    assert report.result(C.ABORTED_STREAM_NOT_ENDED).passed and report.result(C.ABORT_FAILED).passed


def test_every_text_report_ends_with_a_recap_of_the_failed_checks_and_a_line_per_kit() -> None:
    """After the check lines: each failed check with its kit and how to fix it, then what fails each kit."""
    report = conform(broken.NeverStopsEngine, examples=0)
    lines = report.render().splitlines()
    recap = lines.index("failed (2):")
    assert lines[recap + 1].startswith("  - CancellationNotObserved (upstream's kit): check context.is_stopped()")
    assert any(line.startswith("  - MidStreamCancellationIgnored (as Dynamo's runtime drives the engine)")
               for line in lines[recap:])
    assert lines[-3] == "upstream's kit: fails CancellationNotObserved"
    assert lines[-2] == "as Dynamo's runtime drives the engine: fails MidStreamCancellationIgnored"
    assert "DOES NOT CONFORM" in lines[-1]


def test_a_long_reason_wraps_under_its_own_column() -> None:
    """One line per check: a reason longer than the line continues on indented lines, never mid-word; on a
    narrow terminal the reason goes under the check's name, indented a little, so the words still fit."""
    report = conform(broken.NeverStopsEngine, examples=0)
    for columns in (100, 60):
        lines = report.render(columns=columns).splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] CancellationNotObserved"))
        indent = lines[first].index("the stream did not end") if columns == 100 else 8
        assert lines[first + 1].startswith(" " * indent) and not lines[first + 1][indent].isspace()
        assert all(len(line) <= columns for line in lines[first + 1 : first + 3])
