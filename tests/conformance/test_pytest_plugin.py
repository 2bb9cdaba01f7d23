"""The pytest plugin: ``--dbp-engine module:attribute`` turns each conformance check into a test item."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from dynamo_backend_protocol.reference.conformance.checks import CHECKS

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
