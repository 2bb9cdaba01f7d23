"""The pytest plugin: ``--dbp-engine module:attribute`` turns each conformance check into a test item."""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import entry_points

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import SampleEngine, run_conformance
from dynamo_backend_protocol.reference.conformance.checks import CHECKS, Failure
from dynamo_backend_protocol.reference.conformance.pytest_plugin import kit_order
from dynamo_backend_protocol.reference.conformance.report import CheckResult

pytest_plugins = ["pytester"]

PLUGIN = "dynamo_backend_protocol.reference.conformance.pytest_plugin"
BUNDLED = "dynamo_backend_protocol.reference.conformance.sample_engine:SampleEngine"
BROKEN = "dynamo_backend_protocol.reference.conformance.broken_engines:NoFinishReasonEngine"


def plugin_args() -> list[str]:
    """Load the plugin explicitly unless the installed package already registers it (pytest11)."""
    registered = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    # Hypothesis's own pytest plugin spends a second per inner run on its summary; these runs do not need it.
    return ["-p", "no:hypothesispytest"] + ([] if registered else ["-p", PLUGIN])


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*plugin_args(), "--dbp-examples", "3", "--dbp-deadline", "0.3", *args)


def test_each_check_is_its_own_test_item(pytester: pytest.Pytester) -> None:
    """The bundled engine: one passing item per check, the decode-only and the five encode-only ones skipped in agg."""
    result = run(pytester, "--dbp-engine", BUNDLED)
    result.assert_outcomes(passed=len(CHECKS) - 6, skipped=6)


def test_a_failing_check_fails_its_item_with_the_kits_reason(pytester: pytest.Pytester) -> None:
    """Only the failing check's item fails, and its report is the one-line reason; dependents are skipped."""
    result = run(pytester, "--dbp-engine", BROKEN, "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    result.stdout.fnmatch_lines(["*NoTerminalChunk: the stream ended after 8 item(s), none with a finish_reason*"])
    result.stdout.fnmatch_lines(["*ConcurrentGenerateFailed: skipped: NoTerminalChunk failed*"])
    assert outcomes["passed"] + outcomes["failed"] + outcomes["skipped"] == len(CHECKS)


def test_k_selects_conformance_items(pytester: pytest.Pytester) -> None:
    """-k works on conformance items like on any test."""
    result = run(pytester, "--dbp-engine", BUNDLED, "-k", "EmptyModelInConfig or NoChunksYielded")
    result.assert_outcomes(passed=2, deselected=len(CHECKS) - 2)


def test_mode_option_checks_the_engine_in_that_mode(pytester: pytest.Pytester) -> None:
    """--dbp-mode decode runs the decode-only check too (the engine is the user's, configured for decode)."""
    pytester.makepyfile(decode_engine="""
        import functools
        from dynamo_backend_protocol.model import Mode
        from dynamo_backend_protocol.reference import SampleEngine
        factory = functools.partial(SampleEngine, mode=Mode.DECODE)
    """)
    result = run(pytester, "--dbp-engine", "decode_engine:factory", "--dbp-mode", "decode",
                 "-k", "AbortBeforeFirstToken")
    result.assert_outcomes(passed=1, deselected=len(CHECKS) - 1)


def test_engine_args_build_the_engine_through_from_args_in_its_declared_mode(pytester: pytest.Pytester) -> None:
    """--dbp-engine-args feeds from_args, and without --dbp-mode the engine's declared mode is checked:
    the decode-only check runs, so the engine was built for decode."""
    result = run(pytester, "--dbp-engine", "dynamo_style_engines:FromArgsEngine",
                 "--dbp-engine-args", "--disaggregation-mode decode", "-k", "AbortBeforeFirstToken")
    result.assert_outcomes(passed=1, deselected=len(CHECKS) - 1)


def test_without_the_option_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    """Installed but not asked for, the plugin leaves a suite alone."""
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)


def test_a_bad_engine_reference_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """pytest stops at once with a one-line explanation naming the option."""
    result = run(pytester, "--dbp-engine", "not_a_module_anywhere:Engine")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dbp-engine: cannot import 'not_a_module_anywhere'*"])


def test_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """The mode is checked before anything runs."""
    result = run(pytester, "--dbp-engine", BUNDLED, "--dbp-mode", "sideways")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dbp-mode: unknown disaggregation mode 'sideways'*"])


def test_assert_conforms_from_a_users_own_test(pytester: pytest.Pytester) -> None:
    """The documented one-liner passes for a conforming engine and fails, naming the check, for a broken one."""
    pytester.makepyfile(test_engines=f"""
        from dynamo_backend_protocol.reference import SampleEngine, assert_conforms
        from {BROKEN.split(':')[0]} import {BROKEN.split(':')[1]}

        def test_sample_conforms():
            assert_conforms(SampleEngine, examples=3)

        def test_broken_does_not():
            assert_conforms({BROKEN.split(':')[1]}, examples=3)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ConformanceFailure*", "*NoTerminalChunk: *"])


def test_an_item_id_pytest_printed_reruns_that_check_alone(pytester: pytest.Pytester) -> None:
    """The id of a failed item, given back to pytest, collects and runs that one check."""
    pytester.makepyfile(my_engine=f"from {BROKEN.split(':')[0]} import {BROKEN.split(':')[1]} as Engine\n")
    first = run(pytester, "--dbp-engine", "my_engine:Engine", "-rf")
    failed = [line.split()[1] for line in first.stdout.lines if line.startswith("FAILED ")]
    assert failed == ["my_engine.py::NoTerminalChunk"]
    again = run(pytester, "--dbp-engine", "my_engine:Engine", failed[0])
    again.assert_outcomes(failed=1)


def test_last_failed_reruns_only_the_failed_check(pytester: pytest.Pytester) -> None:
    """--lf after a run with one failing check runs that check's item and nothing else."""
    pytester.makepyfile(my_engine=f"from {BROKEN.split(':')[0]} import {BROKEN.split(':')[1]} as Engine\n")
    run(pytester, "--dbp-engine", "my_engine:Engine")
    again = run(pytester, "--dbp-engine", "my_engine:Engine", "--lf")
    again.assert_outcomes(failed=1)


@pytest.mark.parametrize("option", [["--dbp-mode", "decode"], ["--dbp-examples", "3"], ["--dbp-start-timeout", "5"]],
                         ids=lambda option: option[0])
def test_a_dbp_option_without_an_engine_is_a_usage_error(pytester: pytest.Pytester, option: list[str]) -> None:
    """--dbp-mode and the other --dbp-* options mean nothing without --dbp-engine: pytest says so, rather than
    silently running no checks."""
    result = pytester.runpytest(*plugin_args(), *option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option[0]} needs --dbp-engine*"])


def test_settings_in_pyproject_toml_are_read(pytester: pytest.Pytester) -> None:
    """dbp_engine and the other options work from [tool.pytest.ini_options], as any pytest option does."""
    pytester.makepyprojecttoml(f"""
        [tool.pytest.ini_options]
        dbp_engine = "{BUNDLED}"
        dbp_examples = "3"
        dbp_cancel_deadline = "0.3"
    """)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=len(CHECKS) - 6, skipped=6)


def test_x_stops_at_the_first_failing_check_and_durations_are_per_check(pytester: pytest.Pytester) -> None:
    """Each item runs its own check: -x ends the session at the failing check (the later ones never run),
    and --durations lists conformance items with their own times."""
    pytester.makepyfile(my_engine=f"from {BROKEN.split(':')[0]} import {BROKEN.split(':')[1]} as Engine\n")
    result = run(pytester, "--dbp-engine", "my_engine:Engine", "-x", "--durations=0", "-vv")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    assert outcomes.get("passed", 0) + 1 < len(CHECKS), "checks after the failing one ran"
    ran = [item.split("::")[1].split()[0] for item in kit_order_ids(result)]
    assert ran[-1] == "NoTerminalChunk"
    durations = [line for line in result.stdout.lines if re.match(r"^\d+\.\d+s call\s+my_engine\.py::", line)]
    assert {line.split("::")[1] for line in durations} == set(ran)


def kit_order_ids(result: pytest.RunResult) -> list[str]:
    return [line.split()[0] for line in result.stdout.lines if line.startswith("my_engine.py::")]


def test_items_come_in_the_order_the_kit_judges_the_checks() -> None:
    """Otherwise an item would be charged for the checks before it, and -x would stop late."""
    heard: list[Failure] = []

    class Listener:
        def phase(self, what: str) -> None:
            pass

        def examples_done(self, done: int, total: int) -> None:
            pass

        def check_finished(self, result: CheckResult) -> None:
            heard.append(result.failure)

    for mode in (Mode.AGGREGATED, Mode.DECODE):
        heard.clear()
        asyncio.run(run_conformance(SampleEngine, mode=mode, examples=2, events=Listener()))
        assert tuple(heard) == kit_order()


def test_several_modes_in_one_session(pytester: pytest.Pytester) -> None:
    """--dbp-mode agg,decode: each check once per mode, named by it."""
    pytester.makepyfile(decode_capable="""
        from dynamo_backend_protocol.reference import SampleEngine

        def factory():
            return SampleEngine()
    """)
    result = run(pytester, "--dbp-engine", "decode_capable:SampleEngine", "--dbp-mode", "agg,decode",
                 "-k", "AbortBeforeFirstToken", "-rs")
    result.assert_outcomes(passed=1, skipped=1, deselected=2 * len(CHECKS) - 2)
    result.stdout.fnmatch_lines(["*AbortBeforeFirstToken*applies to decode mode only (checking agg)*"])


def test_skips_are_reported_at_the_engine_not_at_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(my_engine=f"from {BUNDLED.split(':')[0]} import SampleEngine\n\n\nclass Engine(SampleEngine):\n"
                        "    pass\n")
    result = run(pytester, "--dbp-engine", "my_engine:Engine", "-rs", "-k", "AbortBeforeFirstToken")
    result.stdout.fnmatch_lines(["SKIPPED [[]1] my_engine.py:4: AbortBeforeFirstToken: skipped*"])
    assert "pytest_plugin.py" not in result.stdout.str()


def test_the_fixture_runs_the_kit_from_a_users_own_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=f"""
        from dynamo_backend_protocol.reference import ConformanceCheck, SampleEngine
        from {BROKEN.split(':')[0]} import {BROKEN.split(':')[1]} as Broken

        def test_sample_in_decode(dbp_conformance):
            report = dbp_conformance(SampleEngine, mode="decode", examples=2)
            assert report.ok
            assert report.result(ConformanceCheck.ABORT_BEFORE_FIRST_TOKEN).passed

        def test_broken(dbp_conformance):
            assert not dbp_conformance(Broken, examples=0).ok
    """)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=2)
