"""``dynamo-backend-protocol conform``: the kit from the command line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from dynamo_backend_protocol.reference import cli

BROKEN_MODULE = '''
import asyncio
from dynamo_backend_protocol.reference import SampleEngine, token


class ForgetsFinishReason(SampleEngine):
    async def _stream(self, request, context):
        for step in range(3):
            await asyncio.sleep(0)
            yield token(step + 1)


def make_engine():
    return ForgetsFinishReason()
'''


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["conform", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def engine_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A module in the current directory holding a broken engine; returns its (unique) name."""
    name = f"user_engine_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(BROKEN_MODULE)
    monkeypatch.chdir(tmp_path)
    return name


def test_without_engine_the_bundled_engine_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job: exit 0, every check listed, a summary that says it conforms."""
    code, out, _ = run([], capsys)
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("[pass] StartFailed") for line in lines)
    assert any(line.startswith("[pass] ScheduleFailed") for line in lines)
    assert "SampleEngine conforms (mode agg)" in lines[-1]


def test_the_bundled_engine_passes_in_decode_mode_too(capsys: pytest.CaptureFixture[str]) -> None:
    """Without ENGINE, --mode configures the bundled engine for that mode as well."""
    code, out, _ = run(["--mode", "decode", "--examples", "5"], capsys)
    assert code == 0
    assert "[pass] AbortBeforeFirstToken" in out


def test_an_engine_from_the_current_directory_is_checked(
    engine_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """module:attribute names a factory next to the user; a failing check exits 1 and is marked."""
    code, out, _ = run([f"{engine_module}:make_engine", "--deadline", "0.2", "--examples", "0"], capsys)
    assert code == 1
    lines = out.splitlines()
    failing = [number for number, line in enumerate(lines) if line.startswith("[FAIL]")]
    assert len(failing) == 1 and "NoTerminalChunk" in lines[failing[0]]
    # A long reason continues on indented lines under its own.
    assert "finish_reason" in " ".join(lines[failing[0] : failing[0] + 3]) and lines[failing[0] + 1].startswith(" ")
    assert "DOES NOT CONFORM" in out.splitlines()[-1]


def test_json_prints_the_report(engine_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives one object with ok, the engine as named, and every check."""
    code, out, _ = run([f"{engine_module}:ForgetsFinishReason", "--json", "--examples", "0"], capsys)
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["engine"] == f"{engine_module}:ForgetsFinishReason"
    statuses = {check["failure"]: check["status"] for check in data["checks"]}
    assert statuses["NoTerminalChunk"] == "failed" and statuses["StartFailed"] == "passed"


def test_trace_writes_every_adapter_request_as_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--trace FILE: one JSON object per observation at the adapter's boundaries, each naming its request;
    the bundled engine's run, checked by ``trace``, conforms."""
    trace = tmp_path / "conform.jsonl"
    code, _, _ = run(["--trace", str(trace), "--examples", "2"], capsys)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert code == 0 and records
    assert {"request", "obs", "mode"} <= set(records[0])
    requests = {record["request"] for record in records}
    assert {"conformance-kill", "conformance-well-formed"} <= requests
    assert cli.main(["trace", str(trace)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["no_colon_here"], "must look like module:attribute"),
        (["surely_not_a_module_xyz:Engine"], "No module named 'surely_not_a_module_xyz'"),
        (["json:NoSuchThing"], "has no attribute 'NoSuchThing'"),
        (["os:sep"], "not an engine class or factory"),
        (["json:JSONDecoder"], "not an engine"),
        (["--deadline", "0"], "--deadline"),
        (["--examples", "-3"], "--examples"),
        (["--mode", "sideways"], "valid values"),
        (["--trace", "/no/such/dir/trace.jsonl"], "cannot write the trace file"),
    ],
    ids=["no-colon", "no-module", "no-attribute", "not-callable", "class-not-engine", "deadline", "examples",
         "mode", "trace"],
)
def test_unusable_input_is_one_line_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake: exit 2, a single line on stderr naming the problem, no traceback."""
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert words in err and "Traceback" not in err


def test_a_module_failing_at_import_reports_its_own_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module's own error text reaches the user, in one line."""
    (tmp_path / "needs_gpu_engine.py").write_text(textwrap.dedent('''
        raise RuntimeError("this engine needs a CUDA device")
    '''))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["needs_gpu_engine:Engine"], capsys)
    assert code == 2
    assert "this engine needs a CUDA device" in err and len(err.strip().splitlines()) == 1


def test_a_factory_that_needs_arguments_is_unusable_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kit calls the factory with no arguments; one that needs some is reported, exit 2."""
    (tmp_path / "engine_with_args.py").write_text(textwrap.dedent('''
        from dynamo_backend_protocol.reference import SampleEngine

        def build(model_path):
            return SampleEngine(model_path)
    '''))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["engine_with_args:build"], capsys)
    assert code == 2
    assert "model_path" in err and "Traceback" not in err


def test_a_run_writes_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No .hypothesis/ folder (or anything else) is left where the user ran conform: they asked for a report."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    code, _, _ = run(["--examples", "3"], capsys)
    assert code == 0
    assert list(tmp_path.iterdir()) == []


def test_each_check_line_is_printed_before_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a terminal, each check's line is printed once as it finishes, then the summary ends the output."""
    code, out, _ = run(["--examples", "0"], capsys)
    lines = out.splitlines()
    assert code == 0
    assert sum(line.startswith("[pass] StartFailed") for line in lines) == 1
    # Then what the requests carried, one line per kit, and the summary.
    assert lines[-4].startswith("requests:") and "conforms" in lines[-1]
    assert lines[-3] == "upstream's kit: nothing fails (16 checks passed)"
    assert lines[-2] == "as Dynamo's runtime drives the engine: nothing fails (12 checks passed)"


def test_quiet_prints_the_whole_table_only_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet prints the table in the checks' own order once the run is over."""
    code, out, _ = run(["--quiet", "--examples", "0"], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("[pass] StartFailed") and "conforms" in lines[-1]
