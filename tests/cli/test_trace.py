"""``trace``: replaying JSON Lines traces through the model.

Traces are produced the way the adapter produces them, with RequestMachine and
Step.as_record, then tampered with the way a faulty adapter would differ.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import ActionKind, ControlState, Mode, RequestMachine, parse_event
from dynamo_backend_protocol.model.machine import step_record
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS, scenario
from dynamo_backend_protocol.model.traces.check import Divergence, TraceReport, check_lines
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.cli.trace import MAX_LINE_BYTES, read_lines


def records(request: str, mode: Mode, events: list[str]) -> list[dict[str, object]]:
    machine = RequestMachine(mode)
    for name in events:
        machine.fire(parse_event(name))
    return [step_record(step, request) for step in machine.history]


def actions_of(record: dict[str, object]) -> list[str]:
    actions = record["actions"]
    assert isinstance(actions, list)
    return [str(action) for action in actions]


def lines_of(*groups: list[dict[str, object]]) -> list[str]:
    return [json.dumps(record) for group in groups for record in group]


def scenario_records(name: str, mode: Mode, request: str = "r1") -> list[dict[str, object]]:
    return records(request, mode, list(scenario(name).events))


def only_request(report: TraceReport) -> tuple[int | None, str | None, str | None]:
    """(line, rule, reason) of the single request's divergence, or Nones."""
    [summary] = report.requests
    if summary.divergence is None:
        return None, None, None
    return summary.divergence.line, summary.divergence.rule, summary.divergence.reason


def test_traces_of_every_scenario_in_every_mode_conform() -> None:
    """What the model itself records must replay cleanly, interleaved across requests."""
    groups = [
        scenario_records(item.name, mode, f"{item.name}/{mode.value}") for item in SCENARIOS for mode in item.modes
    ]
    interleaved = [group[i] for i in range(max(map(len, groups))) for group in groups if i < len(group)]
    report = check_lines(json.dumps(record) for record in interleaved)
    assert report.ok
    assert len(report.requests) == len(groups)
    assert all(summary.checked == len(group) for summary, group in zip(report.requests, groups, strict=True))


def tampered(name: str, mode: Mode, line: int, change: str) -> list[str]:
    """The scenario's trace with the actions of 1-based ``line`` added to, cut or reordered."""
    lines = scenario_records(name, mode)
    actions = actions_of(lines[line - 1])
    if change == "add":
        actions.append(ActionKind.CALL_ABORT.value)
    elif change == "remove":
        actions.pop()
    else:
        actions.reverse()
    lines[line - 1] = {**lines[line - 1], "actions": actions}
    return lines_of(lines)


def expected_rule(name: str, mode: Mode, line: int) -> str:
    machine = RequestMachine(mode)
    for event in scenario(name).events[:line]:
        machine.fire(parse_event(event))
    return machine.history[-1].rule


TAMPERABLE = [
    (item.name, mode, line)
    for item in SCENARIOS
    for mode in item.modes
    for line, record in enumerate(scenario_records(item.name, mode), start=1)
    if record["actions"]
]
REORDERABLE = [
    (name, mode, line)
    for name, mode, line in TAMPERABLE
    if len(set(actions_of(scenario_records(name, mode)[line - 1]))) > 1
]


def test_an_added_action_is_caught_at_its_line_with_the_rule() -> None:
    """An adapter that does one thing too many (say a second abort) is caught exactly there."""
    for name, mode, line in TAMPERABLE:
        report = check_lines(tampered(name, mode, line, "add"))
        assert only_request(report) == (line, expected_rule(name, mode, line), "actions differ"), (name, mode)


def test_a_removed_action_is_caught_at_its_line_with_the_rule() -> None:
    """An adapter that forgets an action (a forward, per STREAM-FORWARD-ORDER, or an
    abort) is caught at that line, naming the rule of the row the model fired."""
    for name, mode, line in TAMPERABLE:
        report = check_lines(tampered(name, mode, line, "remove"))
        assert only_request(report) == (line, expected_rule(name, mode, line), "actions differ"), (name, mode)
    report = check_lines(tampered("clean-completion", Mode.AGGREGATED, 2, "remove"))
    assert only_request(report) == (2, "STREAM-FORWARD-ORDER", "actions differ")


def test_a_reordered_pair_of_actions_is_caught_at_its_line_with_the_rule() -> None:
    """Order matters: forwarding the first token before calling the deferred abort is
    a DECODE-DEFER divergence, and so is every other reordering at its own line."""
    assert REORDERABLE
    for name, mode, line in REORDERABLE:
        report = check_lines(tampered(name, mode, line, "reorder"))
        assert only_request(report) == (line, expected_rule(name, mode, line), "actions differ"), (name, mode)
    report = check_lines(tampered("decode-deferred-abort", Mode.DECODE, 3, "reorder"))
    assert only_request(report) == (3, "DECODE-DEFER", "actions differ")


def test_a_wrong_state_is_caught_with_expected_and_observed() -> None:
    """A trace claiming the wrong state after an event shows both states."""
    lines = scenario_records("aggregated-cancel", Mode.AGGREGATED)
    lines[1] = {**lines[1], "state": "Streaming"}
    report = check_lines(lines_of(lines))
    [summary] = report.requests
    found = summary.divergence
    assert isinstance(found, Divergence)
    assert (found.line, found.rule, found.reason) == (2, "ABORT-IMMEDIATE", "state differs")
    assert (found.expected_state, found.observed_state) == (ControlState.ABORTED, ControlState.STREAMING)


def test_an_event_after_done_is_caught_with_the_rule_that_forbids_it() -> None:
    """STREAM-TERMINAL-LAST: a chunk recorded after the terminal is a violation, and the
    report names the events Done does accept."""
    lines = scenario_records("clean-completion", Mode.AGGREGATED)
    lines.append({"request": "r1", "mode": "agg", "event": "token_chunk", "state": "Done", "actions": []})
    report = check_lines(lines_of(lines))
    assert only_request(report) == (5, "STREAM-TERMINAL-LAST", "not allowed here")
    found = report.requests[0].divergence
    assert isinstance(found, Divergence)
    assert [ev.name for ev in found.allowed] == ["stop", "kill", "first_token", "drop", "disconnect"]


def test_lines_after_done_are_still_checked_against_done() -> None:
    """DONE-ABSORBING: a late stop after Done conforms only if it did nothing."""
    lines = scenario_records("clean-completion", Mode.DECODE)
    late_stop: dict[str, object] = {"request": "r1", "mode": "decode", "event": "stop", "state": "Done", "actions": []}
    assert check_lines(lines_of([*lines, late_stop])).ok
    aborting = {**late_stop, "actions": ["call_abort"]}
    report = check_lines(lines_of([*lines, aborting]))
    assert only_request(report) == (5, "DONE-ABSORBING", "actions differ")


def test_only_the_first_divergence_is_reported_and_later_lines_are_skipped() -> None:
    """After a divergence the model no longer knows the request's state; guessing would
    produce noise, so later lines are counted as not checked."""
    lines = scenario_records("kill", Mode.AGGREGATED)
    lines[1] = {**lines[1], "actions": []}
    [summary] = check_lines(lines_of(lines)).requests
    assert summary.divergence is not None and summary.divergence.line == 2
    assert (summary.checked, summary.skipped) == (1, 3)


def test_mode_is_taken_from_the_first_line_of_each_request() -> None:
    """The same events conform in agg and diverge in decode: the first line's mode decides."""
    agg = records("a", Mode.AGGREGATED, ["setup", "stop"])
    as_decode = [{**record, "mode": "decode"} for record in agg]
    assert check_lines(lines_of(agg)).ok
    assert only_request(check_lines(lines_of(as_decode))) == (2, "DECODE-DEFER", "state and actions differ")


def test_a_request_changing_mode_mid_trace_diverges() -> None:
    lines = records("a", Mode.AGGREGATED, ["setup", "token_chunk"])
    lines[1] = {**lines[1], "mode": "prefill"}
    line, rule, reason = only_request(check_lines(lines_of(lines)))
    assert (line, rule) == (2, None)
    assert reason is not None and "mode changed" in reason


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["setup"]', "expected a JSON object"),
        ('{"request": "b", "mode": "agg", "event": "setup", "state": "Streaming"}', "missing field(s): actions"),
        ('{"request": "b", "mode": "agg", "event": "bogus", "state": "Streaming", "actions": []}', "unknown event"),
        ('{"request": "b", "mode": "agg", "event": "setup", "state": "Streaming", "actions": "none"}',
         "must be a list of strings"),
        ('{"request": "b", "mode": 3, "event": "setup", "state": "Streaming", "actions": []}',
         "field 'mode' must be a string"),
        ('{"request": "b", "mode": "turbo", "event": "setup", "state": "Streaming", "actions": []}',
         "unknown disaggregation mode"),
        ('{"request": "b", "mode": "agg", "event": "setup", "state": "Running", "actions": []}', "unknown state"),
        ('{"request": "b", "mode": "agg", "event": "setup", "state": "Streaming", "actions": ["dance"]}',
         "unknown action"),
    ],
)
def test_a_malformed_line_is_reported_and_other_requests_still_checked(bad_line: str, problem: str) -> None:
    """One bad line must not hide the verdict on every other request in the file."""
    good = lines_of(scenario_records("clean-completion", Mode.AGGREGATED, "a"))
    report = check_lines([good[0], bad_line, *good[1:]])
    assert not report.ok
    first = report.requests[0]
    assert (first.request, first.conforms, first.checked) == ("a", True, 4)
    malformed = [s.malformed for s in report.requests if s.malformed] + report.orphans
    [found] = malformed
    assert found.line == 2
    assert problem in found.problem


def test_a_malformed_line_skips_the_rest_of_its_request() -> None:
    """After a malformed line the request's real state is unknown; its later lines are
    counted as not checked rather than reported as spurious divergences."""
    lines = lines_of(scenario_records("clean-completion", Mode.AGGREGATED, "b"))
    broken = json.loads(lines[1])
    broken["event"] = "tokn_chunk"
    lines[1] = json.dumps(broken)
    [summary] = check_lines(lines).requests
    assert summary.verdict == "malformed"
    assert summary.malformed is not None and summary.malformed.line == 2
    assert (summary.checked, summary.skipped) == (1, 2)


def test_blank_lines_are_ignored_but_counted_in_line_numbers() -> None:
    """Line numbers must match what an editor shows, blank lines included."""
    lines = lines_of(scenario_records("silent-drop", Mode.AGGREGATED))
    lines[2] = lines[2].replace("stop_reading", "release_watch")
    report = check_lines(["", lines[0], "   ", lines[1], lines[2]])
    assert only_request(report)[0] == 5


def test_extra_keys_are_allowed_and_not_compared() -> None:
    """`rule` and `ignored` are informational; a trace may carry its own extras too."""
    lines = [{**record, "rule": "ANYTHING", "latency_ms": 3} for record in scenario_records("kill", Mode.DECODE)]
    assert check_lines(lines_of(lines)).ok


def endless_tokens(count: int) -> Iterator[str]:
    yield json.dumps({"request": "long", "mode": "agg", "event": "setup", "state": "Streaming", "actions": []})
    token = json.dumps(
        {"request": "long", "mode": "agg", "event": "token_chunk", "state": "Streaming", "actions": ["forward_data"]}
    )
    for _ in range(count):
        yield token


def peak_bytes(count: int) -> int:
    tracemalloc.start()
    try:
        check_lines(endless_tokens(count))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_length_of_a_request() -> None:
    """A request streaming for hours must not make the checker keep every step
    (keeping one reference per step would add over 150 kB here)."""
    small, large = peak_bytes(1_000), peak_bytes(20_000)
    assert large - small < 48_000


def test_reader_skips_an_overlong_line_and_goes_on() -> None:
    """A runaway line is reported as malformed without being held in memory whole."""
    data = b"a" * (MAX_LINE_BYTES * 2 + 10) + b"\nnext\n"
    read = list(read_lines(io.BytesIO(data)))
    assert read[0][0] == 1 and read[0][1] is None and "longer than" in (read[0][2] or "")
    assert read[1] == (2, b"next\n", None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["trace", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_exit_0_when_every_request_conforms(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, lines_of(scenario_records("decode-deferred-abort", Mode.DECODE)))
    code, out, _ = run_cli(capsys, str(path))
    assert code == 0
    assert "request r1 [decode]: conforms (4 line(s), ends in Done)" in out


def test_cli_exit_1_and_shows_line_expected_observed_and_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The report a user acts on: where, what the model expected, what happened, which rule."""
    path = write(tmp_path, tampered("decode-deferred-abort", Mode.DECODE, 3, "reorder"))
    code, out, _ = run_cli(capsys, str(path))
    assert code == 1
    assert "line 3: event token_chunk in CancelPending: actions differ" in out
    assert "expected: state Aborted, actions [call_abort, forward_data]" in out
    assert "observed: state Aborted, actions [forward_data, call_abort]" in out
    assert "rule DECODE-DEFER:" in out


def test_cli_exit_1_for_a_malformed_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, ["{oops", *lines_of(scenario_records("setup-failure", Mode.AGGREGATED))])
    code, out, _ = run_cli(capsys, str(path))
    assert code == 1
    assert "line 1: MALFORMED: not valid JSON" in out
    assert "request r1 [agg]: conforms" in out


def test_cli_reads_standard_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(lines_of(scenario_records("kill", Mode.ENCODE))) + "\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, _ = run_cli(capsys, "-")
    assert code == 0 and "conforms" in out


def test_cli_json_output_carries_the_divergence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, tampered("aggregated-cancel", Mode.PREFILL, 2, "remove"))
    code, out, _ = run_cli(capsys, str(path), "--json")
    assert code == 1
    divergence = json.loads(out)["requests"][0]["divergence"]
    assert (divergence["line"], divergence["rule"]) == (2, "ABORT-IMMEDIATE")


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_cli_exit_2_when_the_input_cannot_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    """Unreadable input is a usage problem: one line, exit 2, no traceback."""
    path = tmp_path / "trace.jsonl"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    code, out, err = run_cli(capsys, str(path))
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and str(path) in err
