"""``dynamo-backend-protocol trace FILE`` fed garbage.

A trace validator is pointed at whatever a broken adapter (or a broken disk)
produced.  Whatever it reads, it must answer with a clear report naming line
numbers, the documented exit code (0 every request conforms; 1 a request
diverges, a line is malformed or there is no record; 2 the input cannot be read at all) and never
a traceback, and its memory must not grow with the size of the file.

Valid trace lines are written by hand from the transition table (what setup,
a token chunk and a stop terminal do in agg), not captured from the adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dynamo_backend_protocol.reference.cli import main

MB = 1 << 20


def line(request: str, event: str, state: str, actions: list[str], mode: str = "agg") -> str:
    """One trace record, as the adapter's JSON Lines writer lays it out."""
    return json.dumps(
        {"request": request, "mode": mode, "event": event, "state": state, "actions": actions},
        separators=(",", ":"),
    )


# Per the table, in agg: setup Idle -> Streaming (no action); a token chunk stays in
# Streaming and forwards it; a stop terminal forwards, stops reading, releases the watch.
def setup(request: str) -> str:
    return line(request, "setup", "Streaming", [])


def token_chunk(request: str) -> str:
    return line(request, "token_chunk", "Streaming", ["forward_data"])


def stop_terminal(request: str) -> str:
    return line(request, "terminal:stop", "Done", ["forward_data", "stop_reading", "release_watch"])


def good_request(request: str = "r1") -> list[str]:
    return [setup(request), token_chunk(request), stop_terminal(request)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    return path


def run_trace(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["trace", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- sanity: the hand-written lines


def test_hand_written_trace_conforms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The valid lines every other test builds on must themselves conform (exit 0), or the garbage
    tests below would pass for the wrong reason."""
    code, out, _ = run_trace(write_lines(tmp_path / "good.jsonl", good_request()), capsys)
    assert code == 0
    assert "request r1 [agg]: conforms (3 line(s), ends in Done)" in out


# --------------------------------------------------------------------------- unreadable input: exit 2


def test_binary_file_is_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file of binary bytes (a core dump, a compressed trace) is not a trace at all: exit 2
    with one clear line naming the file, not a flood of malformed-line reports."""
    path = tmp_path / "trace.bin"
    path.write_bytes(bytes(range(256)) * 64)
    code, out, err = run_trace(path, capsys)
    assert code == 2
    assert out == ""
    assert str(path) in err
    assert "not a text file" in err
    assert len(err.strip().splitlines()) == 1


def test_gzip_trace_is_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gzipped trace (a common mistake) is reported as unreadable, exit 2, not parsed as lines."""
    import gzip

    path = tmp_path / "trace.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(good_request()).encode()))
    code, _, err = run_trace(path, capsys)
    assert code == 2
    assert "not a text file" in err


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_or_directory_is_unreadable(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path that cannot be opened as a file is exit 2 with a one-line error naming it."""
    path = tmp_path / "nope.jsonl"
    if kind == "directory":
        path.mkdir()
    code, out, err = run_trace(path, capsys)
    assert code == 2
    assert out == ""
    assert str(path) in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- empty input: exit 1


@pytest.mark.parametrize("content", ["", "\n\n   \n"], ids=["empty", "blank-lines"])
def test_input_without_records_is_reported_as_such_and_exits_1(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FAULT-TRACE-INPUT: a trace with no record (a writer that never ran, the wrong file) is not a
    pass: the report says nothing was found and the exit code is 1, so a CI gate cannot go green on it."""
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "no trace records found" in out
    assert "trace conforms" not in out


def test_dev_null_is_reported_as_no_records(capsys: pytest.CaptureFixture[str]) -> None:
    """FAULT-TRACE-INPUT: ``trace /dev/null`` (a path typo'd into a device) is an input with no records: exit 1."""
    if not os.path.exists(os.devnull):
        pytest.skip(f"{os.devnull} does not exist on this system")
    code, out, _ = run_trace(Path(os.devnull), capsys)
    assert code == 1
    assert "no trace records found" in out


# --------------------------------------------------------------------------- malformed lines: exit 1


def test_binary_line_inside_a_text_trace_is_one_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Binary garbage after valid lines (a torn write) makes just that line malformed, reported with
    its line number; the requests around it are still checked (exit 1)."""
    path = tmp_path / "torn.jsonl"
    first, second = good_request("r1"), good_request("r2")
    path.write_bytes(
        ("\n".join(first) + "\n").encode() + b"\xff\xfe\x00garbage\x80\n" + ("\n".join(second) + "\n").encode()
    )
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 4: MALFORMED" in out
    assert "request r1 [agg]: conforms (3 line(s), ends in Done)" in out
    assert "request r2 [agg]: conforms (3 line(s), ends in Done)" in out


def test_nul_line_inside_a_text_trace_is_one_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line of NUL bytes (a file preallocated and not fully written) is malformed at its line
    number, not a reason to give up on the file."""
    path = tmp_path / "nul.jsonl"
    path.write_bytes(("\n".join(good_request()) + "\n").encode() + b"\x00" * 40 + b"\n")
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 4: MALFORMED" in out
    assert "NUL" in out


def test_truncated_last_line_is_malformed_with_its_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace cut off mid-record (the writer was killed) reports the truncated line, by number,
    as invalid JSON, and still checks the complete lines before it (exit 1)."""
    lines = good_request()
    cut = lines[-1][: len(lines[-1]) // 2]
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join([*lines[:-1], cut]), encoding="utf-8")
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 3: MALFORMED: not valid JSON" in out
    assert "request r1 [agg]: conforms (2 line(s), still in Streaming)" in out


def test_many_truncated_lines_are_all_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Thousands of garbage lines are each counted, even if only some are listed, so the summary
    cannot under-report the damage."""
    count = 5000
    path = write_lines(tmp_path / "junk.jsonl", ['{"request": "r'] * count)
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 1: MALFORMED" in out
    assert f"{count} malformed line(s) naming no request" in out


WRONG_TYPES: list[tuple[str, dict[str, object], str]] = [
    ("request-number", {"request": 5}, "'request'"),
    ("mode-list", {"mode": ["agg"]}, "'mode'"),
    ("event-null", {"event": None}, "'event'"),
    ("state-number", {"state": 3}, "'state'"),
    ("actions-string", {"actions": "forward_data"}, "'actions'"),
    ("actions-numbers", {"actions": [1, 2]}, "'actions'"),
    ("mode-unknown", {"mode": "turbo"}, "'mode'"),
    ("event-unknown", {"event": "token_chunk!"}, "'event'"),
    ("state-unknown", {"state": "Streamin"}, "'state'"),
    ("action-unknown", {"actions": ["forward"]}, "'actions'"),
    ("missing-actions", {"actions": None}, "actions"),
]


@pytest.mark.parametrize(("override", "field"), [case[1:] for case in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES])
def test_wrong_field_types_are_malformed_with_line_and_field(
    override: dict[str, object], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record with a field of the wrong type or an unknown value is reported as malformed at its
    line number, naming the field, with exit 1; no traceback."""
    record: dict[str, object] = json.loads(token_chunk("r1"))
    record.update(override)
    if record["actions"] is None:
        del record["actions"]
    path = write_lines(tmp_path / "typed.jsonl", [setup("r1"), json.dumps(record), stop_terminal("r1")])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 2" in out and "MALFORMED" in out
    malformed = [text for text in out.splitlines() if "MALFORMED" in text]
    assert len(malformed) == 1
    assert field in malformed[0]


@pytest.mark.parametrize("value", ["[1, 2, 3]", "42", '"a string"', "null", "true"])
def test_json_that_is_not_an_object_is_malformed(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid JSON that is not an object is still not a record: malformed at its line, exit 1."""
    path = write_lines(tmp_path / "scalar.jsonl", [*good_request(), value])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "line 4: MALFORMED: expected a JSON object" in out


def test_divergent_record_is_reported_with_line_and_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A well-formed record that the model disagrees with (a chunk read after the terminal) is a
    divergence at its line number, naming the rule (STREAM-TERMINAL-LAST), with exit 1."""
    path = write_lines(tmp_path / "after.jsonl", [*good_request(), token_chunk("r1")])
    code, out, _ = run_trace(path, capsys)
    assert code == 1
    assert "request r1 [agg]: DIVERGES after 3 conforming line(s)" in out
    assert "line 4:" in out
    assert "STREAM-TERMINAL-LAST" in out


# --------------------------------------------------------------------------- the real command, in a subprocess


def console_command() -> list[str]:
    script = Path(sys.executable).with_name("dynamo-backend-protocol")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dynamo_backend_protocol.reference.cli"]


@pytest.mark.parametrize(
    ("content", "expected_code"),
    [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 2), (b'{"request": "r1", "mode": \n', 1)],
    ids=["binary", "truncated"],
)
def test_installed_command_exit_code_without_traceback(content: bytes, expected_code: int, tmp_path: Path) -> None:
    """The installed command, as a user runs it, exits with the documented code on garbage and
    prints no traceback."""
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(content)
    done = subprocess.run(
        [*console_command(), "trace", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == expected_code
    assert "Traceback" not in done.stdout + done.stderr


# --------------------------------------------------------------------------- a 200 MB trace

REQUESTS = 8
BIG_BYTES = 200 * MB
MEMORY_GROWTH_LIMIT = 100 * MB
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, resource, sys, time
    from dynamo_backend_protocol.reference.cli import main

    def peak_kb():
        # ru_maxrss survives fork and exec, so it starts at the (large) test runner's peak;
        # Linux's VmHWM belongs to this interpreter's own memory alone.
        with contextlib.suppress(OSError):
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    warm, path = sys.argv[1], sys.argv[2]
    with contextlib.redirect_stdout(io.StringIO()):
        main(["trace", warm])  # import and warm up everything the check needs
    before = peak_kb()
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["trace", path])
    elapsed = time.perf_counter() - started
    after = peak_kb()
    result = {"code": code, "before_kb": before, "growth_kb": after - before, "seconds": elapsed}
    print(json.dumps({**result, "report": out.getvalue()}))
    """
)


def measure(path: Path, warm: Path) -> dict[str, object]:
    """Run the trace check of ``path`` in a fresh interpreter; returns exit code, peak RSS growth, time, report."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(warm), str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    before = result["before_kb"]
    # The peak is a high-water mark: growth is only visible above the peak reached before.
    assert isinstance(before, int) and before * 1024 < MEMORY_GROWTH_LIMIT, f"baseline peak {before} KB hides growth"
    return result


def write_big_trace(path: Path) -> int:
    """REQUESTS interleaved agg requests, each: setup, token chunks until the file is about
    BIG_BYTES, stop terminal.  Written as one repeated block; returns token chunks per request."""
    tokens_per_block = 2000
    block = ("\n".join(token_chunk(f"r{n}") for n in range(REQUESTS)) + "\n") * tokens_per_block
    blocks = BIG_BYTES // len(block) + 1
    with path.open("w", encoding="utf-8") as out:
        out.write("".join(setup(f"r{n}") + "\n" for n in range(REQUESTS)))
        for _ in range(blocks):
            out.write(block)
        out.write("".join(stop_terminal(f"r{n}") + "\n" for n in range(REQUESTS)))
    return blocks * tokens_per_block


def test_200mb_trace_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    """A long-running server's trace can be hundreds of MB: checking 200 MB of valid records must
    stream it (peak memory growth well under the file size) and still give the exact verdict."""
    path = tmp_path / "big.jsonl"
    tokens = write_big_trace(path)
    assert os.path.getsize(path) >= BIG_BYTES
    warm = write_lines(tmp_path / "warm.jsonl", good_request())
    result = measure(path, warm)
    assert result["code"] == 0
    growth = result["growth_kb"]
    assert isinstance(growth, int)
    assert growth * 1024 < MEMORY_GROWTH_LIMIT, f"peak memory grew by {growth} KB"
    report = result["report"]
    assert isinstance(report, str)
    for n in range(REQUESTS):
        assert f"request r{n} [agg]: conforms ({tokens + 2} line(s), ends in Done)" in report
    print(f"200 MB trace checked in {result['seconds']:.1f} s, peak RSS growth {growth} KB")


def test_200mb_single_line_is_rejected_in_bounded_memory(tmp_path: Path) -> None:
    """A file that is one 200 MB line (no newline: a runaway writer) must not be read into memory:
    it is reported as one over-long malformed line 1 (exit 1), with bounded memory growth."""
    path = tmp_path / "one-line.jsonl"
    chunk = b'{"request":"r1","padding":"' + b"x" * (MB - 30)
    with path.open("wb") as out:
        for _ in range(BIG_BYTES // len(chunk) + 1):
            out.write(chunk)
    assert os.path.getsize(path) >= BIG_BYTES
    warm = write_lines(tmp_path / "warm.jsonl", good_request())
    started = time.perf_counter()
    result = measure(path, warm)
    assert time.perf_counter() - started < 60
    assert result["code"] == 1
    growth = result["growth_kb"]
    assert isinstance(growth, int)
    assert growth * 1024 < MEMORY_GROWTH_LIMIT, f"peak memory grew by {growth} KB"
    report = result["report"]
    assert isinstance(report, str)
    assert "line 1: MALFORMED: line is longer than" in report
