"""``trace`` fed input crafted to break it (FAULT-TRACE-INPUT): nesting deeper than the recursion limit,
integers longer than Python converts, lone surrogates and terminal escapes in request ids, any bytes
and any JSON at all, and traces of many distinct requests.  Whatever the input, the answer is a report
and an exit code (0, 1 or 2), never a traceback; text output cannot be made to show a line the checker
did not write; memory follows the requests still open, not the requests seen.

Valid lines are written by hand from the transition table, as in ``test_hostile_trace.py``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from dynamo_backend_protocol.model.traces.check import SETTLED_WINDOW
from dynamo_backend_protocol.model.traces.observed import OBSERVATIONS
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.cli.trace import check_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_trace import console_command, good_request, line, run_trace, setup, write_lines


def setup_failed(request: str) -> str:
    """Per the table, a failed setup takes Idle straight to Done returning the setup error:
    a whole request in one line."""
    return line(request, "setup_failed", "Done", ["return_setup_error"])


# --------------------------------------------------------------------------- lines that break naive decoders


@pytest.mark.parametrize(
    "bad",
    ["[" * 100_000 + "]" * 100_000, '{"request": "r9", "mode": ' + "[" * 5_000 + "]" * 5_000 + "}"],
    ids=["deep-array", "deep-field"],
)
def test_nesting_deeper_than_the_recursion_limit_is_one_malformed_line(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FAULT-TRACE-INPUT: a line nested 100,000 deep used to end the check with a RecursionError
    traceback; it is one malformed line, by number, and the requests around it are still checked."""
    path = write_lines(tmp_path / "deep.jsonl", [*good_request("r1"), bad])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 4" in out and "MALFORMED" in out
    assert "request r1 [agg]: conforms (3 line(s), ends in Done)" in out


def test_integer_longer_than_python_converts_is_one_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FAULT-TRACE-INPUT: an integer of 5,000 digits used to raise ValueError out of the decoder; it
    is a malformed line like any other."""
    path = write_lines(tmp_path / "huge.jsonl", [*good_request("r1"), '{"request": ' + "7" * 5_000 + "}"])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 4: MALFORMED" in out


FORGED = "x: conforms (1 line(s), ends in Done)\ntrace conforms: 1 request(s): 1 conform\x1b[2K"


def test_request_id_cannot_forge_a_line_or_an_escape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """FAULT-TRACE-INPUT: a diverging request whose id holds a newline and an ANSI escape must not make
    the text report show a "trace conforms" line of its own or send the escape to the terminal: the
    id is printed escaped, on its request's line."""
    path = write_lines(tmp_path / "forged.jsonl", [line(FORGED, "token_chunk", "Streaming", ["forward_data"])])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "\x1b" not in out
    assert not [text for text in out.splitlines() if text.startswith("trace conforms")]
    assert "Done)\\x0atrace conforms" in out and "\\x1b[2K" in out


def test_lone_surrogate_in_a_request_id_is_printed_escaped(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: ``"\\ud800"`` is a legal JSON escape that Python cannot encode to UTF-8; the
    installed command used to die with UnicodeEncodeError printing it.  The id is shown escaped and
    the request is checked (here it conforms: exit 0)."""
    path = tmp_path / "surrogate.jsonl"
    path.write_text(
        "".join(text.replace('"r1"', '"r\\ud800"') + "\n" for text in good_request("r1")), encoding="utf-8"
    )
    done = subprocess.run(
        [*console_command(), "trace", str(path)],
        capture_output=True, text=True, errors="replace", timeout=60, check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "request r\\ud800 [agg]: conforms (3 line(s), ends in Done)" in done.stdout


# --------------------------------------------------------------------------- fuzzing


def no_traceback(path: Path, *extra: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main(["trace", *extra, str(path)])
    return code, out.getvalue()


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=400))
def test_any_bytes_get_a_report_and_an_exit_code(content: bytes, tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: no file content raises out of ``trace``: the answer is exit 0, 1 or 2, and
    every line of the text report is printable (nothing in the file reaches the terminal raw)."""
    path = tmp_path / "fuzz.bin"
    path.write_bytes(content)
    code, out = no_traceback(path)
    assert code in (0, 1, 2)
    assert all(text.isprintable() for text in out.splitlines())


def containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3))


json_values: st.SearchStrategy[object] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    containers,
    max_leaves=12,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "request": st.sampled_from(["r1", "r2"]) | json_values,
        "mode": st.sampled_from(["agg", "decode", "AGG "]) | json_values,
        "event": st.sampled_from(["setup", "token_chunk", "stop", "terminal:stop", "setup_failed"]) | json_values,
        "state": st.sampled_from(["Idle", "Streaming", "Done", "Aborted"]) | json_values,
        "actions": st.lists(st.sampled_from(["forward_data", "call_abort", "release_watch", "bogus"]), max_size=3)
        | json_values,
    },
)


@FUZZ
@given(lines=st.lists(records | json_values, max_size=8), as_json=st.booleans())
def test_any_json_lines_get_a_report_and_an_exit_code(lines: list[object], as_json: bool, tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: JSON of any shape, near-valid records included, is checked or reported
    malformed: exit 0 or 1, never a traceback, and ``--json`` output is one valid JSON document."""
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(value) + "\n" for value in lines), encoding="utf-8")
    code, out = no_traceback(path, *(["--json"] if as_json else []))
    assert code in (0, 1)
    if as_json:
        assert json.loads(out)["ok"] is (code == 0)


observations = st.fixed_dictionaries(
    {"request": st.sampled_from(["r1", "r2"]) | json_values},
    optional={
        "obs": st.sampled_from(sorted(OBSERVATIONS)) | st.sampled_from(["engine.bogus", ""]) | json_values,
        "mode": st.sampled_from(["agg", "decode", "nope"]) | json_values,
        "item": st.sampled_from(["token_chunk", "terminal:stop", "malformed", "data", "error", "end"]) | json_values,
        "n": st.integers(min_value=-2, max_value=3) | st.integers(min_value=2**63) | json_values,
        "event": st.just("setup"),
    },
)


@FUZZ
@given(lines=st.lists(observations, max_size=10), as_json=st.booleans())
def test_any_observation_lines_get_a_report_and_an_exit_code(
    lines: list[object], as_json: bool, tmp_path: Path
) -> None:
    """FAULT-TRACE-INPUT for the observation format: near-valid observations in any order (outputs never
    owed, inputs the model forbids, unknown names, mistyped fields, a step field beside ``obs``) are
    checked or reported malformed: exit 0 or 1, never a traceback."""
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(value) + "\n" for value in lines), encoding="utf-8")
    code, out = no_traceback(path, *(["--json"] if as_json else []))
    assert code in (0, 1)
    if as_json:
        assert json.loads(out)["ok"] is (code == 0)


def test_an_observation_of_null_is_one_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """FAULT-TRACE-INPUT: ``"obs": null`` (found by the fuzz test above) once failed an internal
    assertion with a traceback; it is a malformed line naming the field."""
    path = write_lines(tmp_path / "null.jsonl", ['{"request": "r1", "obs": null}'])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 1" in out and "MALFORMED" in out and "field 'obs'" in out


# --------------------------------------------------------------------------- memory follows open requests


def peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def one_line_requests(path: Path, count: int) -> Path:
    return write_lines(path, [setup_failed(f"request-{n:07d}") for n in range(count)])


def test_memory_follows_open_requests_not_requests_seen(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: 50,000 finished requests must cost about what 5,000 do (the old checker kept
    every request: some 35 MB more here); the verdicts are all still counted."""
    small = one_line_requests(tmp_path / "small.jsonl", 5_000)
    large = one_line_requests(tmp_path / "large.jsonl", 50_000)
    counted: list[int] = []

    def check(path: Path) -> Callable[[], object]:
        return lambda: counted.append(check_file(str(path), lambda summary: None).counts()["conforms"])

    growth = peak_bytes(check(large)) - peak_bytes(check(small))
    assert counted == [50_000, 5_000]
    assert growth < 2_000_000, f"peak grew by {growth} bytes for 45,000 more finished requests"


def test_memory_of_open_requests_is_what_is_kept(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: requests still open are kept (a later line may continue them), so 20,000 open
    requests are all reported at the end, in the order they appeared, none lost."""
    path = write_lines(tmp_path / "open.jsonl", [setup(f"o{n}") for n in range(20_000)] + [setup_failed("done")])
    seen: list[str] = []
    report = check_file(str(path), lambda summary: seen.append(summary.request))
    assert report.ok and report.total == 20_001
    assert seen == [*(f"o{n}" for n in range(20_000)), "done"]


def test_json_output_streams_in_bounded_memory(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: ``--json`` used to build the whole document in memory (1.6 GB for 500,000
    requests); it streams, so 25,000 requests cost about what 5,000 do, and the output is still one
    JSON document with every request."""
    small = one_line_requests(tmp_path / "small.jsonl", 5_000)
    large = one_line_requests(tmp_path / "large.jsonl", 25_000)
    written: list[int] = []

    class Counting(io.TextIOBase):
        def __init__(self) -> None:
            self.size = 0

        def write(self, text: str) -> int:
            self.size += len(text)
            return len(text)

    def run(path: Path) -> Callable[[], object]:
        def go() -> None:
            sink = Counting()
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sys, "stdout", sink)
                assert main(["trace", "--json", str(path)]) == 0
            written.append(sink.size)

        return go

    growth = peak_bytes(run(large)) - peak_bytes(run(small))
    assert growth < 2_000_000, f"peak grew by {growth} bytes for 20,000 more requests"
    assert written[0] > 4 * written[1]
    code, out = no_traceback(small, "--json")
    document = json.loads(out)
    assert code == 0 and len(document["requests"]) == 5_000 and document["counts"]["conforms"] == 5_000


def late_stop(request: str) -> str:
    """A stop crossing the terminal on the wire: in Done it is ignored, so the line shows Done and no action."""
    return line(request, "stop", "Done", [])


def test_a_late_line_of_a_recently_settled_request_is_checked_against_done(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT (DONE-ABSORBING): forgetting settled requests must not turn a late stop that
    arrives a few requests after the terminal into a new request: it is checked against Done."""
    others = [setup_failed(f"other-{n}") for n in range(100)]
    path = write_lines(tmp_path / "late.jsonl", [*good_request("r1"), *others, late_stop("r1")])
    report = check_file(str(path))
    [r1] = [summary for summary in report.requests if summary.request == "r1"]
    assert report.ok and r1.checked == 4


def test_a_line_naming_a_request_forgotten_long_ago_starts_a_new_request(tmp_path: Path) -> None:
    """FAULT-TRACE-INPUT: past the window of settled requests a name is free again (the adapter's writer
    never reuses one); a line naming it is checked as the first line of a new request, and both
    requests are reported, so nothing is hidden."""
    others = [setup_failed(f"other-{n}") for n in range(SETTLED_WINDOW + 1)]
    path = write_lines(tmp_path / "reused.jsonl", [*good_request("r1"), *others, late_stop("r1")])
    report = check_file(str(path))
    assert [summary.verdict for summary in report.requests if summary.request == "r1"] == ["conforms", "diverges"]
    assert not report.ok


def test_closed_standard_input_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """FAULT-TRACE-INPUT: ``trace - <&-`` (standard input closed, so Python has none) used to end in an
    AttributeError traceback; it is input that cannot be read: one line on stderr, exit 2."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", None)
        code = main(["trace", "-"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("dynamo-backend-protocol trace: error: standard input")
    assert captured.err.count("\n") == 1
