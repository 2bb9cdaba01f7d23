"""``conform ENGINE --runtime dynamo``: Dynamo's SampleLLMEngine passes in every mode under Dynamo's real
Worker, quietly and leaving nothing running; broken engines fail the same checks as in a default run.

These need Dynamo's packages (skipped outside CI when absent, failed in CI).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dynamo_backend_protocol.reference.conformance import run_conformance
from dynamo_backend_protocol.reference.conformance.checks import CHECKS
from dynamo_backend_protocol.reference.conformance.target import load_engine_factory
from optional_tools import require_dynamo

SAMPLE = "dynamo.common.backend.sample_engine:SampleLLMEngine"
HERE = Path(__file__).parent
WAIT = 180.0
"""Seconds one command may take (it bounds its own waits far below this)."""
DEADLINE = 1.0
"""The broken engines' cancel deadline: each answers a stop within milliseconds, or never (StrandedByAbort's
drain is 0.2 s), so 1 s tells them apart as the default 2 s does, in half the wait."""


def _conform(*args: str, log: Path) -> tuple[int, subprocess.CompletedProcess[str]]:
    """The command's process id (its workers' namespaces carry it) and what it did."""
    command = [sys.executable, "-m", "dynamo_backend_protocol", "conform", *args, "--runtime", "dynamo",
               "--runtime-log", str(log)]
    with subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            out, err = process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return process.pid, subprocess.CompletedProcess(command, process.returncode, out, err)


def _workers_of(pid: int) -> list[str]:
    """Command lines of worker processes a run with process id ``pid`` started that are still alive."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "runtime.worker_entry" in command and "--namespace dbpruntime" in command and f"{pid}n" in command:
            alive.append(command)
    return alive


@pytest.mark.parametrize("mode", ["agg", "prefill", "decode", "encode"])
def test_sample_llm_engine_conforms_under_dynamos_worker_quietly_leaving_nothing_running(
    mode: str, tmp_path: Path
) -> None:
    require_dynamo()
    log = tmp_path / "runtime.log"
    pid, done = _conform(SAMPLE, "--engine-args", f"--disaggregation-mode {mode}", "--json", log=log)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)  # nothing but the report on stdout
    assert report["ok"] and report["mode"] == mode and report["runtime"] == "dynamo"
    assert report["runtime_log"] == str(log)
    assert done.stderr == ""  # no runtime log line on the terminal...
    assert "dynamo_runtime" in log.read_text(encoding="utf-8", errors="replace")  # ...they are in the file
    judged = {check["failure"] for check in report["checks"] if check["status"] == "passed"}
    assert {"StartFailed", "NoTerminalChunk", "ConcurrentGenerateFailed", "CancellationNotObserved",
            "AbortCalledTwice", "KillNotHandledLikeStop", "CleanupFailed", "MidStreamCancellationIgnored",
            "AbortedStreamNotEnded", "CancellationLeaked", "LifecycleOrderViolated", "ScheduleFailed"} <= judged
    # Each check says which kit it belongs to, as in the default run's report.
    assert {check["failure"]: check["kit"] for check in report["checks"]} == {
        str(spec.failure): str(spec.kit) for spec in CHECKS}
    if mode == "decode":
        assert "from a prefill worker of the same engine" in report["requests"]
        assert "AbortBeforeFirstToken" in judged
    if mode == "encode":
        assert "EncoderResultExpectedObject" in judged
    assert _workers_of(pid) == []  # the run's workers (their namespace carries its pid) are gone


BROKEN = [
    # A stop ignored: upstream's kit sees the raw stream run on, ours a stream that kept streaming after abort().
    ("IgnoresStops", {"CancellationNotObserved", "MidStreamCancellationIgnored"}),
    ("AbortRaises", {"AbortFailed"}),
    ("ChunkAfterTerminal", {"ChunkAfterTerminal"}),
    ("NoTerminal", {"NoTerminalChunk"}),
    # Left waiting for ever once aborted: only through an adapter that calls abort(), as Dynamo's runtime does.
    ("StrandedByAbort", {"AbortedStreamNotEnded"}),
    ("IgnoresKills", {"KillNotHandledLikeStop"}),
]


@pytest.mark.parametrize(("engine", "failures"), BROKEN, ids=[engine for engine, _ in BROKEN])
def test_a_broken_engine_fails_the_same_checks_with_and_without_the_real_runtime(
    engine: str, failures: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_dynamo()
    reference = f"broken_dynamo_engines:{engine}"
    monkeypatch.chdir(HERE)
    default = asyncio.run(run_conformance(load_engine_factory(reference), engine_args="--disaggregation-mode agg",
                                          examples=0, label=reference, cancel_deadline=DEADLINE))
    _, done = _conform(reference, "--engine-args", "--disaggregation-mode agg", "--json", "--examples", "0",
                       "--cancel-deadline", str(DEADLINE), log=tmp_path / "log")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    under_dynamo = {check["failure"]: check["kit"] for check in report["checks"] if check["status"] == "failed"}
    assert under_dynamo == {str(result.failure): str(result.kit) for result in default.failures()}
    assert set(under_dynamo) == failures
    assert report["failed_by_kit"] == default.as_dict()["failed_by_kit"]


def test_the_property_phase_under_the_real_runtime_finds_a_fault_no_fixed_probe_reaches(tmp_path: Path) -> None:
    """The drawn schedules are played under Dynamo's Worker too: an engine that ignores stops only in short
    requests passes every fixed probe, and fails ScheduleFailed with the schedule that shows it and the check
    whose meaning it breaks."""
    require_dynamo()
    _, done = _conform("broken_dynamo_engines:ShortRequestsIgnoreStops", "--engine-args",
                       "--disaggregation-mode agg", "--json", "--examples", "10", "--cancel-deadline", "1",
                       log=tmp_path / "log")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    failed = {check["failure"]: check["reason"] for check in report["checks"] if check["status"] == "failed"}
    assert list(failed) == ["ScheduleFailed"], failed
    assert failed["ScheduleFailed"].startswith("schedule [request 1: ")
    assert "broke MidStreamCancellationIgnored" in failed["ScheduleFailed"]


def test_a_stop_ignored_only_late_in_a_stream_is_found_at_a_drawn_point_under_the_real_runtime(
    tmp_path: Path
) -> None:
    """The default run's late stops are drawn under Dynamo's Worker too: an engine that looks for stops only in
    its first tokens passes the fixed stop (after one item) and fails MidStreamCancellationIgnored at the
    drawn point that shows it, named in the reason."""
    require_dynamo()
    _, done = _conform("broken_dynamo_engines:IgnoresLateStops", "--engine-args", "--disaggregation-mode agg",
                       "--json", "--cancel-deadline", "1", log=tmp_path / "log")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    failed = {check["failure"]: check["reason"] for check in report["checks"] if check["status"] == "failed"}
    assert list(failed) == ["MidStreamCancellationIgnored"], failed
    assert failed["MidStreamCancellationIgnored"].startswith(("stop after", "kill after")), failed


def test_ctrl_c_ends_the_workers_by_pid_and_gives_the_terminal_back(tmp_path: Path) -> None:
    require_dynamo()
    command = [sys.executable, "-m", "dynamo_backend_protocol", "conform", "broken_dynamo_engines:IgnoresStops",
               "--runtime", "dynamo", "--runtime-log", str(tmp_path / "log")]
    with subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + WAIT
        while not _workers_of(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers_of(process.pid), "the run never started its worker"
        time.sleep(0.5)  # into the probes
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130
    assert err == "interrupted\n" and out == ""
    assert _workers_of(process.pid) == []
