"""``differential`` against Dynamo's real adapter: agreement in every mode, a planted
divergence caught and named, and nothing left behind.

These need Dynamo's packages (skipped outside CI when absent, failed in CI).
One run of every mode is shared by the agreement tests: a worker process per
mode is started once and reused across its plays.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import ActionKind, CompiledTable, ControlState, EventKind, Mode
from dynamo_backend_protocol.model.health_probe import CanaryAnswer, EndpointHealth
from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawEvent, RawPhase, RawTransition
from dynamo_backend_protocol.model.table import REQUEST_TABLE
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS
from dynamo_backend_protocol.reference.cli import differential as differential_cli
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.differential import upstream
from dynamo_backend_protocol.reference.differential.probe import run_probe
from dynamo_backend_protocol.reference.differential.raw_plays import RAW_SCENARIOS
from dynamo_backend_protocol.reference.differential.run import ModeReport, run_modes, run_raw
from dynamo_backend_protocol.reference.differential.surface import installed_release
from optional_tools import require_dynamo

BOUNDED_EXAMPLES = 3
"""Drawn schedules per mode in the suite: the teaching scenarios plus a few, to keep CI short."""
WAIT = 60.0
"""Seconds any wait in these tests may take."""


@pytest.fixture(scope="module")
def reports() -> dict[Mode, ModeReport]:
    require_dynamo()
    return {report.mode: report for report in asyncio.run(run_modes(list(Mode), BOUNDED_EXAMPLES, 0))}


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_dynamo_and_our_adapter_agree_with_the_model(reports: dict[Mode, ModeReport], mode: Mode) -> None:
    """RUNTIME-DISCONNECT-KILLS and every other rule: Dynamo's compiled adapter and ours
    produce, scenario by scenario, an outcome the model allows (or, for the Rust side, one a
    documented upstream finding explains)."""
    report = reports[mode]
    assert report.unavailable is None
    diverged = [(v.play.name, v.upstream_differences, v.reference_differences)
                for v in report.verdicts if not v.agreed and not v.explained]
    assert diverged == []
    assert len(report.verdicts) >= 8 + BOUNDED_EXAMPLES


def _without_decode_deferral() -> CompiledTable:
    """The planted bug: a decode stop before first-token aborts at once instead of waiting."""
    rows = tuple(
        replace(row, target=ControlState.ABORTED, actions=(ActionKind.CALL_ABORT,))
        if row.trigger is EventKind.STOP and row.rule == "DECODE-DEFER" and ControlState.STREAMING in row.sources
        else row
        for row in REQUEST_TABLE
    )
    assert rows != REQUEST_TABLE
    return CompiledTable(rows)


def test_a_model_without_the_decode_deferral_is_caught_and_the_scenario_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The differential is only worth running if a wrong model fails it: with the decode
    deferral removed, Dynamo's adapter (which defers) must disagree on decode-deferred-abort,
    and the report must name that scenario."""
    require_dynamo()
    [report] = asyncio.run(run_modes([Mode.DECODE], 0, 0, table=_without_decode_deferral(),
                                     progress=differential_cli._print_verdict))
    diverged = {v.play.name: v for v in report.verdicts if not v.agreed and not v.explained}
    assert "decode-deferred-abort" in diverged
    assert any("abort calls after first-token, model before first-token" in text
               for text in diverged["decode-deferred-abort"].upstream_differences)
    assert "decode-deferred-abort" in capsys.readouterr().out


def _workers_of(run_pid: int) -> list[int]:
    """Live worker processes started by the ``differential`` run ``run_pid`` (their
    namespace carries its pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dynamo_backend_protocol.reference.differential.worker_main" in command and any(
            part.endswith(str(run_pid).encode()) for part in command
        ):
            found.append(int(entry.name))
    return found


def _start_cli(tmp_path: Path, examples: int = 0, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dynamo_backend_protocol", "differential", "--mode", "agg", "--examples", str(examples),
         "--json", *options],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_a_finished_run_leaves_no_process_or_folder_behind(tmp_path: Path) -> None:
    """A run that ends normally must print its figures, have ended its worker (by pid) and
    removed its temporary model directory and discovery folder: the one file left is the
    runtime log the report names."""
    require_dynamo()
    run = _start_cli(tmp_path)
    out, _ = run.communicate(timeout=WAIT)
    assert run.returncode == 0, out.decode()
    report = json.loads(out)
    [figures] = report["modes"]
    assert figures["mode"] == "agg"
    assert figures["scenarios"] == len([s for s in SCENARIOS if s.applies_to(Mode.AGGREGATED)])
    assert figures["agreed"] + figures["as_released"] + figures["upstream_findings"] == figures["scenarios"]
    assert figures["diverged"] == 0
    assert figures["seconds"] > 0
    assert _workers_of(run.pid) == []
    assert list(tmp_path.iterdir()) == [Path(report["runtime_log"])]


def test_the_runtime_logs_go_to_the_named_file_not_the_terminal(tmp_path: Path) -> None:
    """Dynamo's runtime logs dozens of coloured lines a run (one an ERROR for a send to a client
    that left); none may reach the terminal or the JSON: they go, the client's and the worker's,
    to the file the report names."""
    require_dynamo()
    log = tmp_path / "runtime.log"
    run = _start_cli(tmp_path, 0, "--runtime-log", str(log))
    out, err = run.communicate(timeout=WAIT)
    assert run.returncode == 0, err.decode()
    assert err.decode() == ""
    report = json.loads(out)
    assert report["runtime_log"] == str(log)
    assert report["dynamo_release"] == str(installed_release())
    text = log.read_text()
    assert "the agg worker's output" in text
    assert "dynamo_runtime" in text  # the client runtime's own lines, from this process


def test_asking_for_a_release_other_than_the_installed_one_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--dynamo-version guards a venv holding the wrong release: one line naming both, exit 2."""
    require_dynamo()
    assert main(["differential", "--mode", "agg", "--dynamo-version", "1.0.0"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--dynamo-version 1.0.0" in line
    assert f"{installed_release()} is installed" in line


def _listening_addresses(pid: int) -> set[str]:
    """The local addresses of the TCP sockets ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    addresses = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                addresses.add(_address(fields[1].split(":")[0]))
    return addresses


def _address(hex_ip: str) -> str:
    if len(hex_ip) == 8:
        return ".".join(str(int(hex_ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "ipv6:" + hex_ip


def test_the_worker_listens_on_127_0_0_1_only_and_ctrl_c_ends_everything(tmp_path: Path) -> None:
    """Whatever the worker listens on must be 127.0.0.1, and a Ctrl-C in the middle of a run
    must end the worker and remove the temporary folder, with the CLI's exit 130."""
    require_dynamo()
    run = _start_cli(tmp_path, examples=200)
    deadline = time.monotonic() + WAIT
    workers: list[int] = []
    listening: set[str] = set()
    while time.monotonic() < deadline and not listening:
        workers = _workers_of(run.pid)
        if workers:
            try:
                listening = _listening_addresses(workers[0])
            except OSError:
                listening = set()
        if run.poll() is not None:
            break
        time.sleep(0.05)
    assert workers, "the worker did not start"
    assert listening and listening <= {"127.0.0.1"}, listening
    # A terminal's Ctrl-C reaches the foreground group; the worker, in a session of its
    # own, must still be ended (by the CLI, by its pid).
    os.killpg(run.pid, signal.SIGINT)
    run.communicate(timeout=WAIT)
    assert run.returncode == 130
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists() and _is_running(pid)] == []
    assert [path.name for path in tmp_path.iterdir()] == [f"dbp-differential-{run.pid}.log"]


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_that_cannot_start_is_named_with_its_error_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """When Dynamo's worker cannot start, the command must say which worker and the exact
    error it died with, in one line with exit 2, and still leave nothing behind."""
    require_dynamo()
    monkeypatch.setattr(upstream, "_MODULE", "dynamo_backend_protocol.no_such_worker")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    log = tmp_path / "runtime.log"
    assert main(["differential", "--mode", "agg", "--examples", "0", "--runtime-log", str(log)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "the agg worker exited with status 1" in line
    assert "No module named dynamo_backend_protocol.no_such_worker" in line
    assert list(tmp_path.iterdir()) == [log]


def _raw_without_abort_at_stop() -> tuple[RawTransition, ...]:
    """The planted bug: a raw stop is not aborted (as if the decode deferral applied)."""
    rows = tuple(
        replace(row, actions=()) if row.trigger is RawEvent.STOP and RawPhase.STREAMING in row.sources else row
        for row in RAW_TABLE
    )
    assert rows != RAW_TABLE
    return rows


def test_dynamo_raw_adapter_agrees_with_the_raw_machine_and_a_wrong_one_is_caught() -> None:
    """RAW-ABORT-IMMEDIATE, RAW-FORWARD, RAW-END-IS-TERMINAL, RAW-SETUP-FAILURE against Dynamo's compiled
    raw adapter (a RawEngine worker): every play agrees (or is a named release difference); with the
    abort at a stop taken out of the raw table, raw-stop must diverge."""
    require_dynamo()
    report = asyncio.run(run_raw())
    assert report.not_in_release is None and report.unavailable is None
    assert len(report.verdicts) == len(RAW_SCENARIOS)
    diverged = [(v.play.name, v.upstream_differences) for v in report.verdicts if not v.agreed and not v.explained]
    assert diverged == []
    broken = asyncio.run(run_raw(table=_raw_without_abort_at_stop()))
    assert "raw-stop" in [v.play.name for v in broken.verdicts if not v.agreed and not v.explained]


def test_the_health_check_canary_gets_what_the_model_says() -> None:
    """The probe path (from 1.3.1): Dynamo's runtime sends the engine's own health_check_payload, marked,
    through the adapter; tokens then a terminal keep the endpoint ready, so does an error terminal
    chunk (still a response), and a stream that raises makes it notready, as model/health_probe.py says."""
    require_dynamo()
    report = asyncio.run(run_probe())
    assert report.not_in_release is None
    assert {verdict.answer for verdict in report.verdicts} == set(CanaryAnswer)
    assert [verdict.line() for verdict in report.verdicts if not verdict.agreed] == []
    by_answer = {verdict.answer: verdict.seen for verdict in report.verdicts}
    assert by_answer[CanaryAnswer.ERROR_TERMINAL_CHUNK] is EndpointHealth.READY
    assert by_answer[CanaryAnswer.RAISES] is EndpointHealth.NOT_READY
