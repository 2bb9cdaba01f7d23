"""The kit against engines that misbehave as real engines do: every bound holds, every fault is named.

An engine may swallow ``CancelledError``, block the event loop, call
``sys.exit()``, raise a ``BaseException`` of its own or an exception that
cannot be printed, or have attributes that raise when read.  Whatever it does,
``conform`` ends with a verdict naming the check that met the fault (exit 1),
or, while the engine is being loaded or built, one line and exit 2; every
bound holds within a second or two of its value; one Ctrl-C ends the run.
The in-process cases run ``conform`` with 1-second bounds and no property
phase; the cases that end the process (an engine thread left running, a loop
the engine never gives back, Ctrl-C) run it in a child process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.chunks import classify_item
from dynamo_backend_protocol.reference import cli
from dynamo_backend_protocol.reference.conformance.fuzz import search
from dynamo_backend_protocol.reference.conformance.kept import KEPT_TOKEN_IDS, kept
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.rules import Finding
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine
from dynamo_backend_protocol.reference.conformance.session import KitSettings
from dynamo_backend_protocol.reference.context import Context
from misbehaving_engines import MARK
from test_pytest_plugin import plugin_args

HERE = Path(__file__).resolve().parent
ENGINE = "misbehaving_engines:Engine"
CONFORM_ERROR = "dynamo-backend-protocol conform: error: "  # the one error shape every subcommand uses
BOUND = 1.0
SHORT_BOUNDS = ["--start-timeout", "1", "--stream-timeout", "1", "--cleanup-timeout", "1", "--cancel-deadline", "1",
                "--examples", "0"]
SLACK = 1.5
"""How far past its bound a check may end: the monitor's grace for a blocked loop, plus scheduling."""
P = ParamSpec("P")
CHILD_WAIT = 30.0
"""Bound on any wait for a child process (a hung child is killed, and the test fails)."""


def conform_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = cli.main(["conform", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(entry for entry in report["checks"] if entry["failure"] == name)
    return found


TEST_BOUND = 45
"""Seconds any one test here may take: a kit that lets an engine hang it must fail the test, not hang CI."""
OVERRAN_REPEAT = 3


class Overran(Exception):
    pass


def bounded(test: Callable[P, None]) -> Callable[P, None]:
    """Run ``test`` under an alarm, cleared as soon as its body ends (before pytest reports it)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        def overran(_signum: int, _frame: FrameType | None) -> None:
            # Again every few seconds: asyncio.run's own clean-up may wait on the engine as well.
            signal.alarm(OVERRAN_REPEAT)
            raise Overran(f"the test did not end within {TEST_BOUND} s: the kit let the engine hold it")

        previous = signal.signal(signal.SIGALRM, overran)
        signal.alarm(TEST_BOUND)
        try:
            test(*args, **kwargs)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return run


@pytest.fixture
def misbehaving(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.chdir(HERE)
    return monkeypatch


@pytest.mark.parametrize(("fault", "failed", "words"), [
    ("start-sys-exit", "StartFailed", "SystemExit: 3"),
    ("start-base-exception", "StartFailed", "Boom: engine-defined"),
    ("start-cancelled-error", "StartFailed", "CancelledError"),
    ("start-generator-exit", "StartFailed", "GeneratorExit"),
    ("start-unprintable", "StartFailed", "Unprintable: <its message could not be printed>"),
    ("generate-sys-exit", "GenerateFailed", "SystemExit: 5"),
    ("abort-sys-exit", "AbortFailed", "SystemExit: 6"),
    ("cleanup-sys-exit", "CleanupFailed", "SystemExit: 7"),
])
def test_whatever_the_engine_raises_is_a_named_failure_of_the_check_that_met_it(
    misbehaving: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fault: str, failed: str, words: str
) -> None:
    """FAULT-KIT-ENGINE-FAILS: sys.exit(), a BaseException of the engine's own, its own CancelledError or
    GeneratorExit, an exception whose str() raises: the check fails by name with what was raised, and conform
    exits 1 (not 0 with no verdict, not 3, not a traceback)."""
    misbehaving.setenv("MISBEHAVE", fault)
    code, report, err = conform_json([ENGINE, *SHORT_BOUNDS], capsys)
    assert code == 1, err
    result = check(report, failed)
    assert result["status"] == "failed"
    assert words in result["reason"]
    assert "Traceback" not in err


@pytest.mark.parametrize(("fault", "failed"), [
    ("start-swallows-cancellation", "StartFailed"),
    ("stream-swallows-cancellation", "NoChunksYielded"),
    ("cleanup-swallows-cancellation", "CleanupFailed"),
    ("start-blocks-4s", "StartFailed"),
    ("stream-blocks-4s", "NoChunksYielded"),
])
def test_a_bound_holds_against_an_engine_that_swallows_cancellation_or_blocks_the_loop(
    misbehaving: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fault: str, failed: str
) -> None:
    """FAULT-KIT-BOUNDED: the check fails at its 1 s bound (not after the engine's 4 s, or never), and the run
    goes on to a verdict."""
    misbehaving.setenv("MISBEHAVE", fault)
    started = time.monotonic()
    code, report, err = conform_json([ENGINE, *SHORT_BOUNDS], capsys)
    assert code == 1, err
    result = check(report, failed)
    assert result["status"] == "failed", result
    assert result["seconds"] <= BOUND + SLACK, result
    assert time.monotonic() - started < 20, "the run as a whole did not end promptly"


@pytest.mark.parametrize(("reference", "words"), [
    ("misbehaving_engines:DeclaresModeBadly", "disaggregation_mode raised RuntimeError: mode unknowable"),
    ("misbehaving_engines:KvSourcesPropertyRaises", "kv_event_sources raised Boom: kv_event_sources property"),
    ("misbehaving_engines:FromArgsConfigRaises", "disaggregation_mode raised ValueError: config mode unreadable"),
    ("misbehaving_engines:AbortPropertyRaises", "abort raised KeyError: 'abort'"),
])
def test_an_engine_attribute_that_raises_while_building_is_one_line_and_exit_2(
    misbehaving: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reference: str, words: str
) -> None:
    """FAULT-KIT-ENGINE-FAILS: the engine's or its worker config's disaggregation_mode, or a kv_event_sources
    property, raising when read used to print a traceback."""
    code = cli.main(["conform", reference, *SHORT_BOUNDS])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith(CONFORM_ERROR), captured.err
    assert words in captured.err


def test_sys_exit_in_the_factory_is_one_line_and_exit_2(
    misbehaving: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """FAULT-KIT-ENGINE-FAILS: sys.exit() while building the engine ended conform with no message."""
    misbehaving.setenv("MISBEHAVE", "factory-sys-exit")
    code = cli.main(["conform", ENGINE, *SHORT_BOUNDS])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"{CONFORM_ERROR}constructing the engine with misbehaving_engines:Engine() raised SystemExit: 4\n"


@pytest.mark.parametrize(("source", "words"), [
    ("class Boom(BaseException): pass\nraise Boom('on import')\n", "raised Boom: on import"),
    ("raise GeneratorExit\n", "raised GeneratorExit"),
    ("def __getattr__(name):\n    raise LookupError('no ' + name)\n", "raised LookupError: no Engine"),
])
def test_a_module_that_raises_on_import_or_lookup_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], source: str, words: str
) -> None:
    """FAULT-KIT-ENGINE-FAILS: a BaseException on import or a module __getattr__ that raises."""
    name = f"hostile_module_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["conform", f"{name}:Engine"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("option", [
    ["--stream-timeout", "inf"], ["--stream-timeout", "1e10"], ["--cancel-deadline", "inf"],
    ["--start-timeout", "nan"], ["--cleanup-timeout", "1e300"],
])
def test_a_bound_the_clocks_cannot_hold_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], option: list[str]
) -> None:
    """FAULT-KIT-OPTIONS: inf, nan or 1e10 seconds used to end in OverflowError inside a check; the parser
    refuses them."""
    code = cli.main(["conform", *option])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "seconds" in err, err


def test_the_property_phase_stops_at_its_budget_however_many_examples_are_asked() -> None:
    """FAULT-KIT-OPTIONS: --examples 10**12 used to keep Hypothesis drawing long after the fuzz budget was spent."""
    asyncio.run(_search_far_past_the_budget())


async def _search_far_past_the_budget() -> None:
    from hypothesis import strategies as st

    settings = KitSettings(SampleEngine, "sample", Mode.AGGREGATED, cancel_deadline=1.0, examples=10**12,
                           fuzz_budget=0.5)
    drawn = 0

    async def run_one(_settings: KitSettings, _value: int) -> list[Finding]:
        nonlocal drawn
        drawn += 1
        return []

    started = time.monotonic()
    assert await search(settings, st.integers(), run_one, 10**12, lambda value: (value,)) is None
    # Generous: the search must stop soon after its 0.5 s, not when 10**12 examples are drawn (the alarm).
    assert time.monotonic() - started < 0.5 + 20, f"searched past the budget ({drawn} examples)"
    assert drawn > 0


def test_a_long_list_of_valid_token_ids_is_kept_as_a_prefix_judged_the_same() -> None:
    """FAULT-KIT-MEMORY: the kept prefix is judged exactly as the whole; a malformed list is kept whole."""
    long_terminal = {"token_ids": list(range(100_000)), "finish_reason": "length"}
    malformed = {"token_ids": [*range(100), -1]}
    trimmed = kept(long_terminal)
    assert isinstance(trimmed, dict) and len(trimmed["token_ids"]) == KEPT_TOKEN_IDS
    assert kept(malformed) is malformed, "an id the MalformedChunk reason names must be kept"
    for item in (long_terminal, malformed, {"token_ids": list(range(50))}):
        assert classify_item(kept(item), 1, Mode.AGGREGATED) == classify_item(item, 1, Mode.AGGREGATED)


class HugeTerminal(SampleEngine):
    async def _stream(self, request: dict[str, Any], context: Context) -> Any:
        yield {"token_ids": list(range(200_000)), "finish_reason": "length"}


def test_the_recorder_keeps_what_judges_an_item_not_its_payload() -> None:
    """FAULT-KIT-MEMORY: an engine whose terminal carries 10 MB of token ids drove conform to about 1.1 GiB:
    every request's items were kept whole until the end of its check."""
    asyncio.run(_record_a_huge_terminal())


async def _record_a_huge_terminal() -> None:
    recorder = RecordingEngine(HugeTerminal())
    stream = await recorder.generate({"token_ids": [1]}, Context("huge"))
    items = [item async for item in stream]
    assert len(items[0]["token_ids"]) == 200_000, "the consumer still gets the whole item"
    assert [len(seen.item["token_ids"]) for seen in recorder.requests["huge"].items  # type: ignore[index]
            ] == [KEPT_TOKEN_IDS]


def run_child(fault: str, argv: list[str], interrupt: bool = False) -> tuple[int, str, str, float]:
    """conform in a child process with ``fault``; returns its exit status, stdout, stderr and wall time.
    With ``interrupt``, the child says on stderr when it meets the fault, and then gets one SIGINT."""
    started = time.monotonic()
    marked = {"MISBEHAVE_MARK": "1"} if interrupt else {}
    child = subprocess.Popen(
        [sys.executable, "-m", "dynamo_backend_protocol", "conform", ENGINE, *argv],
        cwd=HERE, env={**os.environ, "MISBEHAVE": fault, **marked}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    # The reads below block until the child writes or ends; this ends a child that does neither in time.
    watchdog = threading.Timer(CHILD_WAIT, child.kill)
    watchdog.start()
    try:
        if interrupt:
            assert child.stderr is not None
            mark = child.stderr.readline()
            assert mark == MARK, mark
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=CHILD_WAIT)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait(timeout=CHILD_WAIT)
    return child.returncode, out, err, time.monotonic() - started


CHILD_START = 8.0
"""Generous allowance for a child's interpreter start, imports and the rest of a run on a busy machine."""


def test_a_start_that_blocks_the_loop_for_ever_is_interrupted_at_its_bound_and_the_run_goes_on() -> None:
    """FAULT-KIT-BOUNDED: time.sleep(3600) in start() used to hang conform; no in-loop timer can fire."""
    code, out, err, seconds = run_child("start-blocks-forever", [*SHORT_BOUNDS, "--json"])
    assert code == 1, err
    result = check(json.loads(out), "StartFailed")
    assert result["status"] == "failed" and result["seconds"] <= BOUND + SLACK, result
    assert seconds < BOUND + SLACK + CHILD_START


def test_an_engine_that_keeps_the_loop_for_ever_ends_the_run_with_one_line() -> None:
    """FAULT-KIT-BOUNDED: an engine that swallows even the interruption of its blocking call."""
    code, _out, err, seconds = run_child("start-blocks-and-swallows", SHORT_BOUNDS)
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith(CONFORM_ERROR), err
    assert "blocked the event loop in start" in err
    assert seconds < BOUND + 2 * SLACK + CHILD_START


def test_an_engine_thread_that_outlives_the_run_does_not_hold_the_process() -> None:
    """FAULT-KIT-BOUNDED: start() awaiting asyncio.to_thread(time.sleep, 30): the verdict came after 1 s, the
    process exit only after 30."""
    code, out, err, seconds = run_child("start-in-thread-30s", SHORT_BOUNDS)
    assert code == 1, err
    assert "[FAIL] StartFailed" in out and "DOES NOT CONFORM" in out, "the report must be written before the exit"
    assert seconds < 30 - 10, f"the process waited {seconds:.1f} s for the engine's thread"


@pytest.mark.parametrize("fault", ["stream-swallows-cancellation", "start-blocks-and-swallows"])
def test_one_ctrl_c_ends_a_run_whose_engine_swallows_cancellation_or_holds_the_loop(fault: str) -> None:
    """FAULT-KIT-BOUNDED: one Ctrl-C used to do nothing here; three gave exit 130 and 'Task was destroyed'."""
    code, _out, err, _seconds = run_child(fault, ["--start-timeout", "30", "--stream-timeout", "30",
                                                  "--examples", "0"], interrupt=True)
    assert err.splitlines() == ["interrupted"], err
    assert code == 130


for _name, _test in list(globals().items()):
    if _name.startswith("test_") and callable(_test):
        globals()[_name] = bounded(_test)


def _child(fault: str, argv: list[str], cwd: Path) -> tuple[int, str, str, float]:
    """``python argv`` in a child process with ``fault`` planted, the misbehaving engines importable; its exit
    status, stdout, stderr and wall time (killed past CHILD_WAIT)."""
    started = time.monotonic()
    env = {**os.environ, "MISBEHAVE": fault, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    try:
        done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=CHILD_WAIT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run was still going after {CHILD_WAIT:g} s")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_assert_conforms_bounds_an_engine_that_blocks_the_loop_as_the_cli_does(tmp_path: Path) -> None:
    """FAULT-KIT-BOUNDED: assert_conforms ran the kit under a plain asyncio.run, so time.sleep(3600) in start()
    held the caller's test for ever; it must fail StartFailed at its bound."""
    code, _out, err, seconds = _child("start-blocks-forever", ["-c", (
        "import misbehaving_engines\n"
        "from dynamo_backend_protocol.reference.conformance import assert_conforms\n"
        "assert_conforms(misbehaving_engines.Engine, start_timeout=1, stream_timeout=1, cleanup_timeout=1,\n"
        "                cancel_deadline=1, examples=0)\n")], tmp_path)
    assert code == 1
    assert "ConformanceFailure" in err and "StartFailed: start did not finish within 1 s" in err, err[-2000:]
    assert seconds < BOUND + SLACK + CHILD_START


def test_the_pytest_plugin_bounds_an_engine_that_blocks_the_loop(tmp_path: Path) -> None:
    """FAULT-KIT-BOUNDED: under ``pytest --dbp-engine`` the same engine hung the session; its StartFailed item
    must fail at the bound and the session end."""
    code, out, _err, seconds = _child("start-blocks-forever", [
        "-m", "pytest", "-p", "no:cacheprovider", *plugin_args(), "--dbp-engine", ENGINE,
        "--dbp-examples", "0", "--dbp-deadline", "1", "--dbp-start-timeout", "1", "--dbp-stream-timeout", "1",
        "--dbp-cleanup-timeout", "1", "-rf"], tmp_path)
    assert code == 1, out[-2000:]
    assert "FAILED misbehaving_engines.py::StartFailed" in out, out[-2000:]
    assert seconds < BOUND + SLACK + CHILD_START
