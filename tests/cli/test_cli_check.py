"""The ``check`` command: what a user sees when they ask whether the model holds."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.model import (
    REQUEST_TABLE,
    RULES,
    ActionKind,
    CompiledTable,
    ControlState,
    EventKind,
    Mode,
)
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore import ExplorationReport, explore_all
from dynamo_backend_protocol.model.explore.compiled import CompiledReport, explore_compiled
from dynamo_backend_protocol.model.explore.engine import explore_engine
from dynamo_backend_protocol.model.faults import FAULT_INVARIANTS
from dynamo_backend_protocol.model.invariants import DONE_REACHABLE, TABLE_WELL_FORMED, all_invariants
from dynamo_backend_protocol.reference.cli import check as cli_check
from dynamo_backend_protocol.reference.cli import main
from model_helpers import aborted_never_ends

ALL_MODE_SLUGS = {"agg", "prefill", "decode", "encode"}
REQUEST_RULE_IDS = {inv.rule for inv in [*all_invariants(), *FAULT_INVARIANTS]} | {DONE_REACHABLE, TABLE_WELL_FORMED}
INVARIANT_KEYS = {"id", "name", "holds", "counterexample"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli(capsys, "check", "--json", *argv)
    assert err == ""
    data = json.loads(out)
    assert isinstance(data, dict)
    return code, data


def assert_mode_shape(report: Any) -> None:
    """One mode's report: exactly these keys with these types."""
    assert isinstance(report, dict)
    assert set(report) == {"states", "transitions", "seconds", "invariants", "liveness"}
    assert type(report["states"]) is int and report["states"] > 0
    assert type(report["transitions"]) is int and report["transitions"] > 0
    assert type(report["seconds"]) is float and report["seconds"] >= 0
    invariants = report["invariants"]
    assert isinstance(invariants, list)
    assert len(invariants) >= 9
    for item in invariants:
        assert isinstance(item, dict)
        assert set(item) == INVARIANT_KEYS
        assert isinstance(item["id"], str) and item["id"] in RULES
        assert isinstance(item["name"], str) and item["name"]
        assert type(item["holds"]) is bool
        assert item["counterexample"] is None or all(isinstance(e, str) for e in item["counterexample"])


def test_check_json_reports_every_mode_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped model holds: exit 0 and one JSON object covering the four
    modes, each with its state counts and at least nine invariants, all holding."""
    code, data = check_json(capsys)
    assert code == 0
    # "lifecycle" is the engine lifecycle model, checked alongside (any --mode).
    assert set(data) == {"ok", "modes", "lifecycle", "fairness"}
    assert data["ok"] is True
    assert set(data["modes"]) == ALL_MODE_SLUGS
    for report in data["modes"].values():
        assert_mode_shape(report)
        assert all(item["holds"] and item["counterexample"] is None for item in report["invariants"])
        assert {item["id"] for item in report["invariants"]} == REQUEST_RULE_IDS
    lifecycle = data["lifecycle"]
    assert set(lifecycle) == {"ok", "states", "transitions", "seconds", "invariants", "liveness"}
    assert lifecycle["ok"] is True
    assert all(set(item) == INVARIANT_KEYS for item in lifecycle["invariants"])


def test_check_json_decode_has_more_states_than_agg(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON carries real numbers: decode's CancelPending makes its graph
    larger than aggregated's."""
    _, data = check_json(capsys)
    assert data["modes"]["decode"]["states"] > data["modes"]["agg"]["states"]


def test_check_mode_decode_reports_only_decode(capsys: pytest.CaptureFixture[str]) -> None:
    """--mode narrows the request model check to one mode."""
    code, data = check_json(capsys, "--mode", "decode")
    assert code == 0
    assert set(data["modes"]) == {"decode"}
    assert_mode_shape(data["modes"]["decode"])


@pytest.mark.parametrize(("text", "slug"), [("AGGREGATED", "agg"), (" Prefill ", "prefill"), ("encode", "encode")])
def test_check_mode_accepts_every_documented_spelling(
    capsys: pytest.CaptureFixture[str], text: str, slug: str
) -> None:
    """--mode parses like Mode.parse: case-insensitive, trimmed, with the alias."""
    code, data = check_json(capsys, "--mode", text)
    assert code == 0
    assert set(data["modes"]) == {slug}


def test_check_mode_all_reports_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """--mode all is the same as no --mode."""
    _, data = check_json(capsys, "--mode", "all")
    assert set(data["modes"]) == ALL_MODE_SLUGS


def test_check_bad_mode_is_one_line_on_stderr_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --mode is a usage error: exit 2, nothing on stdout, one line on
    stderr naming the bad value and the valid ones."""
    code, out, err = run_cli(capsys, "check", "--mode", "disagg")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "disagg" in lines[0]
    for slug in ALL_MODE_SLUGS:
        assert slug in lines[0]


def test_check_text_names_every_rule_id_in_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """The human report lists, under each mode, every rule it checked by ID,
    so a user can look each one up in the spec."""
    code, out, err = run_cli(capsys, "check")
    assert code == 0
    assert err == ""
    assert "VIOLATED" not in out
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("mode "):
            current = blocks.setdefault(line.split()[1].rstrip(":"), [])
        elif not line.startswith("  "):
            current = None
        elif current is not None:
            current.append(line)
    assert set(blocks) == ALL_MODE_SLUGS
    for mode_lines in blocks.values():
        text = "\n".join(mode_lines)
        for rule in REQUEST_RULE_IDS:
            assert rule in text
    for rule in RULES:
        if rule.startswith("LIFECYCLE-"):
            assert rule in out


def _drop_aborts() -> CompiledTable:
    """The shipped table with one bug: a silent drop in Streaming calls abort."""
    rows = []
    for row in REQUEST_TABLE:
        if row.trigger is EventKind.DROP and ControlState.STREAMING in row.sources:
            others = tuple(s for s in row.sources if s is not ControlState.STREAMING)
            rows.append(replace(row, sources=(ControlState.STREAMING,), actions=(ActionKind.CALL_ABORT, *row.actions)))
            if others:
                rows.append(replace(row, sources=others))
        else:
            rows.append(row)
    return CompiledTable(tuple(rows))


@pytest.fixture
def broken_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``check`` explore a table with a planted bug."""

    def explore_broken(modes: list[Mode]) -> ExplorationReport:
        return explore_all(modes, _drop_aborts())

    monkeypatch.setattr(cli_check, "explore_all", explore_broken)


@pytest.mark.usefixtures("broken_model")
def test_check_text_shows_violation_with_counterexample_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """When a rule breaks the user sees VIOLATED, the rule ID and the shortest
    event sequence (setup, then drop) and the command fails."""
    code, out, _ = run_cli(capsys, "check", "--mode", "agg")
    assert code == 1
    violated = [line for line in out.splitlines() if "VIOLATED" in line]
    assert any("ABORT-NEEDS-CANCEL" in line for line in violated)
    assert "counterexample: setup -> drop" in out


@pytest.mark.usefixtures("broken_model")
def test_check_json_shows_violation_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON form says ok: false and carries the counterexample as a list."""
    code, data = check_json(capsys, "--mode", "agg")
    assert code == 1
    assert data["ok"] is False
    failures = [item for item in data["modes"]["agg"]["invariants"] if not item["holds"]]
    assert {item["id"] for item in failures} == {"ABORT-NEEDS-CANCEL"}
    assert failures[0]["counterexample"] == ["setup", "drop"]


def test_installed_console_script_runs_check() -> None:
    """The package installs a ``dynamo-backend-protocol`` entry point that runs
    check for real, in a fresh process."""
    script = Path(sys.executable).parent / "dynamo-backend-protocol"
    assert script.exists(), f"console script not installed next to {sys.executable}"
    result = subprocess.run(
        [str(script), "check", "--json", "--mode", "decode"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert set(data["modes"]) == {"decode"}


def test_installed_console_script_bad_mode_exits_2() -> None:
    """The real process also turns a bad --mode into exit 2 with one stderr line."""
    script = Path(sys.executable).parent / "dynamo-backend-protocol"
    result = subprocess.run(
        [str(script), "check", "--mode", "nope"], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_ends_the_command_with_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who interrupts a long conform or bench run sees one line, not a traceback."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_check, "explore_all", interrupted)
    assert main(["check"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


LIVENESS_IDS = {"DONE-EVENTUALLY", "ABORT-EVENTUALLY", "DECODE-WAIT-ENDS"}


def test_check_json_reports_liveness_with_fairness_in_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """Every mode reports the three liveness rules with the fairness each assumes
    and needs; decode names first-token-or-end for its deferral (DECODE-WAIT-ENDS)
    and gives the lasso of the unfair case as prefix and repeating events."""
    code, data = check_json(capsys)
    assert code == 0
    for mode, report in data["modes"].items():
        by_id = {item["id"]: item for item in report["liveness"]}
        assert set(by_id) == LIVENESS_IDS, mode
        assert all(item["holds"] and item["counterexample"] is None for item in by_id.values())
        assert by_id["DONE-EVENTUALLY"]["needs"] == ["setup-returns", "stream-ends"]
    decode = {item["id"]: item for item in data["modes"]["decode"]["liveness"]}
    deferral = decode["DECODE-WAIT-ENDS"]
    assert "first-token-or-end" in deferral["assumes"]
    assert "first-token signal or the stream's end" in data["fairness"]["first-token-or-end"]
    assert deferral["needs"] == ["first-token-or-end"]
    assert deferral["holds_without_fairness"] is False
    assert deferral["lassos_without"]["first-token-or-end"] == {
        "prefix": ["setup", "stop", "empty_chunk"],
        "cycle": ["empty_chunk"],
    }
    agg = {item["id"]: item for item in data["modes"]["agg"]["liveness"]}
    assert agg["ABORT-EVENTUALLY"]["holds_without_fairness"] is True


def test_check_text_shows_each_liveness_rule_with_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    """The table says, per rule, which fairness it needs and the loop without it,
    or that it holds without fairness."""
    code, out, _ = run_cli(capsys, "check", "--mode", "decode")
    assert code == 0
    assert "DECODE-WAIT-ENDS" in out
    assert "without first-token-or-end: setup -> stop -> empty_chunk, then forever: empty_chunk" in out
    code, out, _ = run_cli(capsys, "check", "--mode", "agg")
    assert "holds without fairness" in out


def test_check_prints_a_fair_lasso_when_a_request_never_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request that can never end after abort violates DONE-EVENTUALLY even
    under its fairness; check prints the lasso and fails."""
    table, _ = aborted_never_ends()
    monkeypatch.setattr(cli_check, "explore_all", lambda modes: explore_all(modes, table))
    code, out, _ = run_cli(capsys, "check", "--mode", "agg")
    assert code == 1
    assert any("VIOLATED" in line and "DONE-EVENTUALLY" in line for line in out.splitlines())
    assert "fair lasso: setup -> token_chunk -> stop, then forever: token_chunk" in out


def test_check_machine_disagg_reports_the_composition(capsys: pytest.CaptureFixture[str]) -> None:
    """--machine disagg explores a decode request with its KV transfer and
    reports DISAGG-NO-ORPHANED-TRANSFER among its invariants."""
    code, data = check_json(capsys, "--machine", "disagg")
    assert code == 0
    assert data["ok"] is True
    rules = {item["id"] for item in data["disagg"]["invariants"]}
    assert "DISAGG-NO-ORPHANED-TRANSFER" in rules
    assert data["disagg"]["states"] > 0


def test_check_machine_disagg_outside_decode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The KV transfer only exists in decode mode: asking for agg is one line and exit 2."""
    code, out, err = run_cli(capsys, "check", "--machine", "disagg", "--mode", "agg")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "decode" in err


def test_check_requests_prints_the_size_and_speed_of_the_composition(capsys: pytest.CaptureFixture[str]) -> None:
    """check --requests N explores N requests sharing one engine and prints what a user
    sizing a run needs: states, transitions, states per second and peak memory, with the
    ENGINE-* invariants among the verdicts."""
    code, out, _ = run_cli(capsys, "check", "--requests", "2", "--mode", "decode")
    assert code == 0
    first = out.splitlines()[0]
    assert "2 decode request(s)" in first and "states," in first and "transitions" in first
    assert "states/s" in first
    assert "peak memory:" in out
    assert "ENGINE-NO-ABORT-AFTER-CLEANUP" in out and "ENGINE-NO-LIVE-AFTER-CLEANUP" in out


def test_check_requests_json_reports_each_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives one object with the figures per mode, for scripts that track them."""
    code, data = check_json(capsys, "--requests", "1", "--mode", "agg")
    assert code == 0 and data["ok"] is True and data["requests"] == 1
    figures = data["modes"]["agg"]
    assert figures["states"] > 0 and figures["states_per_second"] > 0
    assert data["peak_memory_mib"] > 0


@pytest.mark.parametrize(
    "argv",
    [["--requests", "0"], ["--requests", "many"], ["--baseline"], ["--requests", "2", "--machine", "disagg"]],
    ids=["zero", "not-a-number", "baseline-alone", "with-disagg"],
)
def test_check_requests_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A request count that is not 1..8, or flags that do not combine, is exit 2 and one line."""
    code, out, err = run_cli(capsys, "check", *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1


def test_check_machine_disagg_reports_its_liveness_with_the_fairness_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--machine disagg reports the composition's liveness rules (DISAGG-TRANSFER-ENDS among
    them) with the lasso each needed fairness lets through when dropped, in text and JSON."""
    code, out, _ = run_cli(capsys, "check", "--machine", "disagg")
    assert code == 0
    assert any("holds" in line and "DISAGG-TRANSFER-ENDS" in line for line in out.splitlines())
    assert "without transfer-completes-or-fails: setup -> transfer_started" in out
    code, data = check_json(capsys, "--machine", "disagg")
    liveness = {item["id"]: item for item in data["disagg"]["liveness"]}
    assert liveness["DISAGG-TRANSFER-ENDS"]["needs"] == ["transfer-completes-or-fails"]
    assert liveness["DONE-EVENTUALLY"]["holds"] is True


def test_check_requests_reports_liveness_and_prints_the_lasso_when_it_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --requests 2 reports each request's DONE-EVENTUALLY and ENGINE-CLEANUP-EVENTUALLY;
    on a table where an aborted request never ends, both fail with a fair lasso and exit 1."""
    code, data = check_json(capsys, "--requests", "2", "--mode", "agg")
    assert code == 0
    rules = [item["id"] for item in data["modes"]["agg"]["liveness"]]
    assert rules == ["DONE-EVENTUALLY", "DONE-EVENTUALLY", "ENGINE-CLEANUP-EVENTUALLY"]
    table, _ = aborted_never_ends()
    monkeypatch.setattr(cli_check, "explore_engine", lambda composition, liveness: explore_engine(
        composition, table, liveness=liveness))
    monkeypatch.setattr(cli_check, "explore_compiled", lambda composition, **options: explore_compiled(
        composition, table, **options))
    code, out, _ = run_cli(capsys, "check", "--requests", "2", "--mode", "agg")
    assert code == 1
    assert any("VIOLATED" in line and "ENGINE-CLEANUP-EVENTUALLY" in line for line in out.splitlines())
    assert "fair lasso: start_called -> start_ok -> r1:setup" in out


def test_check_requests_beyond_two_reports_every_liveness_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """Liveness of N requests is checked on the compiled, symmetry-reduced graph: three requests
    get each request's DONE-EVENTUALLY and the engine's cleanup, with what each one needs."""
    code, data = check_json(capsys, "--requests", "3", "--mode", "prefill")
    assert code == 0 and "liveness_not_checked" not in data
    liveness = {item["name"]: item for item in data["modes"]["prefill"]["liveness"]}
    assert list(liveness) == [
        "request_1_in_flight_reaches_done",
        "request_2_in_flight_reaches_done",
        "request_3_in_flight_reaches_done",
        "started_engine_cleanup_begins",
    ]
    assert all(item["holds"] for item in liveness.values())
    assert liveness["request_3_in_flight_reaches_done"]["needs"] == ["r3-setup-returns", "r3-stream-ends"]
    cleanup = liveness["started_engine_cleanup_begins"]
    assert "owner-cleans-up" in cleanup["needs"] and "r2-engine-progresses" not in cleanup["needs"]
    assert cleanup["lassos_without"]["r3-stream-ends"]["cycle"] == ["r3:token_chunk"]


def test_check_requests_stops_at_its_bound_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A composition past --max-states (or --max-memory) ends with one line saying how far the
    search got and what to run instead, exit 2, nothing on standard output."""
    code, out, err = run_cli(capsys, "check", "--requests", "3", "--mode", "agg", "--max-states", "40000")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "--max-states 40,000" in line and "--checker spin" in line and "states" in line


@pytest.mark.parametrize("value", ["lots", "12Q", "1K"], ids=["word", "unit", "too-small"])
def test_check_max_memory_refuses_what_is_not_a_size(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, out, err = run_cli(capsys, "check", "--requests", "2", "--max-memory", value)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_check_requests_out_of_memory_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under an address-space limit tighter than the bound, Python may raise MemoryError before
    the bound is reached: still one line naming what to do, exit 2."""

    def exhausted(composition: Composition, **options: object) -> CompiledReport:
        raise MemoryError

    monkeypatch.setattr(cli_check, "explore_compiled", exhausted)
    code, out, err = run_cli(capsys, "check", "--requests", "8", "--mode", "agg")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "ran out of memory" in line and "--checker spin" in line


def test_the_default_memory_bound_fits_under_an_address_space_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process run under ulimit -v gets a bound well inside it (issue 28: 8 agg requests under
    1.5 GiB ended in a MemoryError traceback); without one, at most 2 GiB."""
    limit = 1536 * 1024**2
    real = resource.getrlimit
    monkeypatch.setattr(
        resource, "getrlimit", lambda which: (limit, limit) if which == resource.RLIMIT_AS else real(which)
    )
    assert cli_check.default_max_memory() <= 0.6 * limit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert 64 * 1024**2 < cli_check.default_max_memory() <= 2 * 1024**3
