"""The bench: what its figures mean, how it judges targets, and that its soak and
trace sections check what they claim.  Everything runs at ``--quick`` sizes;
nothing here asserts a timing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.adapter import EngineAdapter, ResponseStream
from dynamo_backend_protocol.reference.bench.adapter_cost import AdapterSizes
from dynamo_backend_protocol.reference.bench.memory import MIB, run_python
from dynamo_backend_protocol.reference.bench.prediction import Plan, predict
from dynamo_backend_protocol.reference.bench.report import BenchOptions, run_bench
from dynamo_backend_protocol.reference.bench.rounds import MIN_ROUNDS, Figure, interleaved, ratio
from dynamo_backend_protocol.reference.bench.soak import SoakEngine, concurrent_requests
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.context import Context
from optional_tools import require_commands


@pytest.fixture(scope="module")
def everything() -> dict[str, Any]:
    """One quick run of every section, shared: the tests below read different parts of it."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", "--all", "--quick", "--json"]) == 0
    figures: dict[str, Any] = json.loads(printed.getvalue())
    return figures


def _is_figure(value: object) -> bool:
    return (
        isinstance(value, dict)
        and {"median", "q1", "q3", "spread", "unit"} <= set(value)
        and value["q1"] <= value["median"] <= value["q3"]
        and value["spread"] == pytest.approx(value["q3"] - value["q1"], abs=1e-3)
    )


def test_checker_section_sets_the_explorer_beside_spin_on_one_composition(everything: dict[str, Any]) -> None:
    """bench --checker: states, states per second and bytes per state for the compiled explorer
    and, where SPIN is installed, for SPIN's exhaustive search of the same composition."""
    checker = everything["checker"]
    assert "decode requests, one engine" in checker["composition"]
    assert checker["explorer_states"] > 0 and checker["explorer_states_per_second"] > 0
    assert checker["explorer_bytes_per_state"] >= 0
    if "spin" in checker:
        require_commands("spin", "cc", install="apt-get install -y spin gcc")
    assert checker["spin_states"] > checker["explorer_states"], "SPIN stores every interleaving, no symmetry"
    assert checker["spin_bytes_per_state"] > 0


def test_every_timed_adapter_figure_carries_its_median_and_spread(everything: dict[str, Any]) -> None:
    """A median without its spread cannot tell a regression from noise; scripts read both."""
    adapter = everything["adapter"]
    for name in ("bare_trivial", "adapter_trivial", "adapter_trivial_untraced", "floor_trivial",
                 "ratio_trivial", "floor_ratio_trivial", "traces_off_ratio", "bare_yielding",
                 "adapter_yielding", "floor_yielding", "ratio_yielding", "floor_ratio_yielding"):
        assert _is_figure(adapter[name]), (name, adapter[name])
    assert everything["rounds"] >= MIN_ROUNDS
    assert "Annotated" in everything["floor"]


def test_json_lists_each_target_with_its_value_and_verdict(everything: dict[str, Any]) -> None:
    """``ok`` is the conjunction of the targets, and each target says what it judged."""
    targets = everything["targets"]
    names = {target["name"] for target in targets}
    assert {"adapter.ratio_trivial", "adapter.ratio_yielding", "adapter.traces_off_ratio",
            "soak.abort_mismatches", "trace.text_speed_vs_json_loads", "trace.json_peak_rss_mib"} <= names
    for target in targets:
        assert set(target) == {"name", "statistic", "relation", "bound", "value", "ok"}
    assert everything["ok"] is all(target["ok"] for target in targets)


def test_quick_soak_leaves_nothing_and_aborts_as_the_model_predicts(everything: dict[str, Any]) -> None:
    """Concurrent requests ending every way: no task or watch left, nothing escaped,
    and the engine saw exactly the abort calls the model's replay of each plan predicts."""
    soak = everything["soak"]
    assert soak["requests"] == 2_000
    assert soak["tasks_left"] == soak["watches_left"] == soak["exceptions_escaped"] == 0
    assert soak["abort_mismatches"] == soak["event_mismatches"] == 0
    assert soak["abort_calls"] == soak["predicted_aborts"] > 0
    assert soak["bytes_per_in_flight_request"] > 0
    assert soak["long_stream_chunks"] == 50_000


def test_trace_section_runs_the_validator_on_a_trace_it_accepts(everything: dict[str, Any]) -> None:
    """The generated trace is a valid one, so the figures are those of a conforming read."""
    trace = everything["trace"]
    assert trace["text_exit_code"] == trace["json_exit_code"] == 0
    assert trace["lines"] > trace["requests"] == 2_000
    for run in ("json_loads", "text", "json"):
        assert trace[f"{run}_lines_per_s"] > 0 and trace[f"{run}_peak_rss_mib"] > 0


def test_profile_attributes_the_adapter_cost_rung_by_rung(everything: dict[str, Any]) -> None:
    """The attribution table is measured: every row has a median and spread, ending
    with what the adapter costs beyond the rebuilt ladder."""
    rows = everything["profile"]["rows"]
    assert [row["name"] for row in rows] == [
        "engine", "layer", "annotated", "read", "recorded", "wrapped", "rest"
    ]
    assert all(_is_figure(row) for row in rows)


def test_check_exits_1_when_a_target_is_missed(capsys: pytest.CaptureFixture[str]) -> None:
    """CI and scripts rely on the exit status; an impossible bound must fail the check."""
    assert main(["bench", "--explore", "--quick", "--check", "--target", "explore.seconds=0"]) == 1
    out = capsys.readouterr().out
    assert "MISSED explore.seconds" in out and "SOME TARGETS MISSED" in out


def test_check_exits_0_when_every_target_is_met(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--explore", "--quick", "--check", "--target", "explore.seconds=1000"]) == 0
    assert "all targets met" in capsys.readouterr().out


def test_without_check_a_missed_target_is_reported_but_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """A first look at the figures is not a failure; only --check turns a miss into exit 1."""
    assert main(["bench", "--explore", "--quick", "--json", "--target", "explore.seconds=0"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is False


@pytest.mark.parametrize("argv", [["--target", "adapter.nope=1"], ["--target", "explore.seconds"], ["--rounds", "5"]])
def test_bad_bench_options_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--explore", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _burn(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class SlowAdapter(EngineAdapter):
    """The real adapter plus 50 microseconds of CPU per chunk."""

    async def generate(self, request: dict[str, Any], context: Context) -> ResponseStream:
        stream = await super().generate(request, context)
        return _Slowed(stream)  # type: ignore[return-value]


class _Slowed:
    def __init__(self, stream: ResponseStream) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[object]:
        return self._slowed()

    async def _slowed(self) -> AsyncIterator[object]:
        async for item in self._stream:
            _burn(50e-6)
            yield item


# Bounds the real adapter meets by a wide margin and 50 us per chunk misses by one.
_LOOSE = {"adapter.ratio_trivial": 50.0, "adapter.ratio_yielding": 5.0}


def _missed_ratio_targets(adapter_type: type[EngineAdapter]) -> set[str]:
    options = BenchOptions(sections=("adapter",), adapter_type=adapter_type, bounds=_LOOSE,
                           adapter_sizes=AdapterSizes(trivial_chunks=200, yielding_chunks=100))

    async def no_conformance() -> None:
        return None

    report = asyncio.run(run_bench(options, no_conformance))
    return {verdict.target.name for verdict in report.verdicts if not verdict.ok} & set(_LOOSE)


def test_the_ratio_targets_judge_the_adapter_that_was_measured() -> None:
    """A planted slow adapter misses bounds the real adapter meets: the ratios come
    from the adapter actually run, round by round, not from a fixed figure."""
    assert _missed_ratio_targets(EngineAdapter) == set()
    assert _missed_ratio_targets(SlowAdapter) == set(_LOOSE)


def test_a_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians() -> None:
    """Load that slows one round slows both variants of it; per-round ratios cancel it out."""
    adapter, bare = [10, 10, 1000], [5, 1000, 500]
    assert ratio(adapter, bare).median == 2.0


def test_figures_report_the_interquartile_range() -> None:
    figure = Figure.of([float(n) for n in range(1, 22)], "ns/chunk")
    assert (figure.q1, figure.median, figure.q3, figure.spread) == (6.0, 11.0, 16.0, 10.0)


def test_variants_run_interleaved_round_by_round() -> None:
    """Bare, adapter, floor, bare, adapter, floor, ...: no variant gets a quiet block of its own."""
    order: list[str] = []

    def variant(name: str) -> Any:
        async def run() -> None:
            order.append(name)
        return run

    asyncio.run(interleaved({"bare": variant("bare"), "adapter": variant("adapter")}, MIN_ROUNDS))
    assert order == ["bare", "adapter"] * (MIN_ROUNDS + 1)  # one warm-up round first


def test_a_round_alternates_its_variants_slice_by_slice_and_sums_each_variants_slices() -> None:
    """With three slices a round runs bare, adapter, bare, adapter, bare, adapter: a burst of
    load lands on one slice of one variant, not on a whole round's run of it."""
    order: list[str] = []
    costs = {"bare": 1_000_000, "adapter": 3_000_000}

    def variant(name: str) -> Any:
        async def run() -> None:
            order.append(name)
            ends = time.thread_time_ns() + costs[name]
            while time.thread_time_ns() < ends:
                pass
        return run

    samples = asyncio.run(interleaved({"bare": variant("bare"), "adapter": variant("adapter")}, MIN_ROUNDS, 3))
    assert order == ["bare", "adapter"] * (1 + MIN_ROUNDS * 3)
    assert [len(samples["bare"]), len(samples["adapter"])] == [MIN_ROUNDS, MIN_ROUNDS]
    assert min(samples["bare"]) >= 3 * costs["bare"]
    assert min(samples["adapter"]) >= 3 * costs["adapter"]
    assert ratio(samples["adapter"], samples["bare"]).median == pytest.approx(3.0, rel=0.2)


def test_fewer_than_21_rounds_are_refused() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="at least 21 rounds"):
        asyncio.run(interleaved({"bare": nothing}, MIN_ROUNDS - 1))


class ForgetfulEngine(SoakEngine):
    """Loses every other abort call it receives."""

    calls = 0

    async def abort(self, context: Context) -> None:
        self.calls += 1
        if self.calls % 2:
            await super().abort(context)


def test_soak_reports_abort_calls_that_differ_from_the_model() -> None:
    """The soak's comparison can fail: an engine that loses aborts shows as mismatches."""
    figures = asyncio.run(concurrent_requests(300, engine_type=ForgetfulEngine))
    assert isinstance(figures["abort_mismatches"], int) and figures["abort_mismatches"] > 0


def test_decode_stop_before_the_first_token_aborts_only_if_a_token_comes() -> None:
    """The soak's oracle follows the decode rule: an abort observed before the first
    token is deferred until a token exists, and never made if none does."""
    never = predict(Plan("a", Mode.DECODE, "stop_before_first_token", after=1, late=0), tokens=4)
    deferred = predict(Plan("b", Mode.DECODE, "stop_before_first_token", after=1, late=1), tokens=4)
    agg = predict(Plan("c", Mode.AGGREGATED, "stop_before_first_token", after=1, late=0), tokens=4)
    assert (never.aborts, deferred.aborts, agg.aborts) == (0, 1, 1)


_BIG_PARENT = """
import json
from dynamo_backend_protocol.reference.bench.memory import run_python
ballast = bytearray(150 * 1024 * 1024)
small = run_python("-c", "pass", [], timeout=60)
big = run_python("-c", "x = bytearray(60 * 1024 * 1024)", [], timeout=60)
print(json.dumps([small.exit_code, small.peak_rss_bytes, big.exit_code, big.peak_rss_bytes]))
"""


def test_child_peak_memory_is_the_childs_own_not_the_parents() -> None:
    """The kernel's wait4 peak for a child includes the parent's size before exec;
    the bench's figure must not, or a small validator would look big.  The big
    parent is a process of its own, so this test's process stays small."""
    done = subprocess.run([sys.executable, "-c", _BIG_PARENT], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    small_code, small_peak, big_code, big_peak = json.loads(done.stdout)
    assert small_code == big_code == 0
    assert small_peak < 60 * MIB <= big_peak


def test_a_failing_child_reports_its_exit_code_and_last_error_line() -> None:
    run = run_python("-c", "import sys; sys.exit('no such trace')", [sys.executable], timeout=60)
    assert (run.exit_code, run.last_error_line) == (1, "no such trace")
