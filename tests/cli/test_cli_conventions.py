"""The command's conventions: one error shape, a line and exit 2 for every misuse (checked before any
work), help with examples and exit codes, colour only on a terminal, output failures as one line,
and no exit status outside 0, 1, 2 and 130."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import Mode, RequestMachine, parse_event
from dynamo_backend_protocol.model.machine import step_record
from dynamo_backend_protocol.reference.cli import SUBCOMMANDS, main
from dynamo_backend_protocol.reference.cli import export as cli_export
from dynamo_backend_protocol.reference.cli import trace as cli_trace
from dynamo_backend_protocol.reference.cli.support import emit

ERROR_LINE = re.compile(r"^dynamo-backend-protocol(?: [a-z]+)?: error: \S.*\n$")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *expected: str) -> None:
    assert code == 2
    assert ERROR_LINE.match(err), err
    assert "Traceback" not in err
    for part in expected:
        assert part in err


def command(*argv: str, stdout: int | None = subprocess.PIPE, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamo_backend_protocol", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, cwd=cwd, env=env)


# ------------------------------------------------------------------------------------- misuse: one line, exit 2


@pytest.fixture
def binary_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.bin"
    path.write_bytes(b"\x7fELF\x00\x01\x02\xff\xfe")
    return path


def test_teach_spec_that_is_binary_is_one_line(tmp_path: Path, binary_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "teach", "-o", str(tmp_path / "p.html"), "--spec", str(binary_file))
    assert_one_error_line(code, err, "--spec", "not a text file")
    assert out == "" and not (tmp_path / "p.html").exists()


def test_teach_spec_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "latin1.md"
    spec.write_bytes("#### RULE caf\u00e9".encode("latin-1"))
    code, _, err = run(capsys, "teach", "-o", str(tmp_path / "p.html"), "--spec", str(spec))
    assert_one_error_line(code, err, "not UTF-8 text")


def test_teach_spec_that_is_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "teach", "-o", str(tmp_path / "p.html"), "--spec", str(tmp_path))
    assert_one_error_line(code, err, "is a directory")


@pytest.mark.parametrize("name", ["diagram", "teach"])
def test_output_that_is_a_directory_says_so(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.html"
    target.mkdir()
    code, _, err = run(capsys, name, "-o", str(target))
    assert_one_error_line(code, err, "is a directory")


def test_export_to_a_directory_fails_before_the_export_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The composition's export takes seconds: a bad -o is refused before it starts."""
    def never(*_args: object) -> str:
        raise AssertionError("the export ran although -o cannot be written")

    monkeypatch.setattr(cli_export, "export_engine_promela", never)
    code, _, err = run(capsys, "export", "--requests", "3", "-o", str(tmp_path))
    assert_one_error_line(code, err, "-o", "is a directory")
    code, _, err = run(capsys, "export", "--requests", "3", "-o", str(tmp_path / "missing" / "x.pml"))
    assert_one_error_line(code, err, "does not exist")


def test_an_option_value_starting_with_a_dash_gets_the_equals_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "conform", "my_engine:MyEngine", "--engine-args", "--bogus")
    assert_one_error_line(code, err, "--engine-args=")


def test_explain_refuses_a_request_number_of_thousands_of_digits(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "--requests", "2", "--events", f"r{'4' * 4400}:setup")
    assert_one_error_line(code, err, "--events item 1", "no request")


def test_every_error_has_the_one_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Parser errors, checks of the command itself and unknown commands all read the same way."""
    for argv in (["check", "--mode", "bogus"], ["check", "--baseline"], ["check", "--no-such-option"],
                 ["no-such-command"], ["export", "--requests", "2", "--machine", "disagg"],
                 ["trace", str(tmp_path / "missing.jsonl")], ["bench", "--rounds", "x"]):
        code, _, err = run(capsys, *argv)
        assert_one_error_line(code, err)
        named = argv[0] if argv[0] in SUBCOMMANDS else None
        assert err.startswith(f"dynamo-backend-protocol {named}: " if named else "dynamo-backend-protocol: ")
        assert f"error: {named}:" not in err  # the command is named once


# ------------------------------------------------------------------------------------- option names


def test_the_checker_is_chosen_with_checker_and_engine_is_an_alias(capsys: pytest.CaptureFixture[str]) -> None:
    """--engine is the engine under test in conform; check's checker is --checker (the old name still works)."""
    code, out, _ = run(capsys, "check", "--mode", "agg", "--checker", "explorer", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    assert run(capsys, "check", "--mode", "agg", "--engine", "explorer", "--json")[0] == 0
    help_text = run(capsys, "check", "--help")[1]
    assert "--checker" in help_text and "--engine" not in help_text


def test_trace_is_a_file_in_conform_and_no_option_of_bench(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bench", "--trace")
    assert_one_error_line(code, err, "--trace")
    assert "--trace-validator" in run(capsys, "bench", "--help")[1]


# ------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_a_description_examples_and_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, name, "--help")
    assert code == 0
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: dynamo-backend-protocol {name}")
    assert not description.lstrip().startswith(("positional", "options")), "no description"
    examples = out[out.index("examples:"):out.index("exit status:")]
    assert f"dynamo-backend-protocol {name}" in examples
    exit_status = out[out.index("exit status:"):]
    assert re.search(r"^  0 ", exit_status, re.M) and re.search(r"^  2 ", exit_status, re.M)


def test_help_never_breaks_a_word_at_its_hyphen(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = run(capsys, "conform", "--help")[1]
    flattened = " ".join(out.split())
    assert "--disaggregation-mode decode" in flattened
    assert not re.search(r"[a-z]-\n", out), "a word was split at a hyphen"


def test_only_the_subcommand_that_runs_is_imported() -> None:
    """--version imports no subcommand, trace imports trace alone, and neither loads the adapter or the kit."""
    probe = textwrap.dedent("""
        import sys
        from dynamo_backend_protocol.reference.cli import main
        main(sys.argv[1:])
        loaded = [m for m in sys.modules if m.startswith("dynamo_backend_protocol.reference.")]
        print(" ".join(sorted(loaded)), file=sys.stderr)
    """)
    for argv, expected in ((["--version"], set()), (["trace", os.devnull], {"trace"})):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
        loaded = set(done.stderr.strip().splitlines()[-1].split()) if done.stderr.strip() else set()
        commands = {name.rsplit(".", 1)[1] for name in loaded if name.rsplit(".", 1)[1] in SUBCOMMANDS}
        assert commands == expected
        assert not any(".adapter" in name or ".conformance" in name for name in loaded), loaded


# ------------------------------------------------------------------------------------- colour


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    shown = Terminal()
    emit("  VIOLATED  RULE\n  holds     OTHER", shown)
    assert "\x1b[" in shown.getvalue()
    piped = io.StringIO()
    emit("  VIOLATED  RULE", piped)
    assert piped.getvalue() == "  VIOLATED  RULE\n"
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    emit("  VIOLATED  RULE", plain)
    assert plain.getvalue() == "  VIOLATED  RULE\n"


# ------------------------------------------------------------------------------------- output failures


@pytest.mark.parametrize("argv", [["check", "--mode", "agg"], ["explain", "--list"], ["trace", os.devnull],
                                  ["export"], ["diagram"], ["conform", "--examples", "0", "--json"]])
def test_a_full_standard_output_is_one_line_and_exit_2(argv: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = command(*argv, stdout=full.fileno())
    assert done.returncode == 2
    assert ERROR_LINE.match(done.stderr), done.stderr
    assert "standard output" in done.stderr


@pytest.mark.parametrize("name", ["diagram", "export"])
def test_a_full_output_file_is_one_line_and_exit_2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [name, "-o", "/dev/full"] + (["--format", "dot"] if name == "diagram" else [])
    code, _, err = run(capsys, *argv)
    assert_one_error_line(code, err, "/dev/full")


def test_a_reader_that_stops_early_leaves_no_noise(tmp_path: Path) -> None:
    """`explain --list | head -1`: EPIPE ends the command quietly."""
    process = subprocess.Popen([sys.executable, "-m", "dynamo_backend_protocol", "explain", "--list"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    error = process.stderr.read()
    assert process.wait(timeout=60) in (0, 1)
    assert error == b""


def test_conform_trace_file_write_error_comes_after_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "conform", "--examples", "0", "--quiet", "--trace", "/dev/full")
    assert "StartFailed" in out  # the report is not lost
    assert_one_error_line(code, err, "the trace file /dev/full", "No space left")


NOISY_ENGINE = """
import os
print("printed on import")
os.makedirs("elsewhere", exist_ok=True)
os.chdir("elsewhere")
from dynamo_backend_protocol.reference import SampleEngine

class NoisyEngine(SampleEngine):
    async def start(self, *args, **kwargs):
        print("printed in start")
        os.write(1, b"written to fd 1 in start\\n")
        return await super().start(*args, **kwargs)
"""


def test_conform_json_stays_one_object_whatever_the_engine_prints(tmp_path: Path) -> None:
    """The engine's prints go to stderr; a relative --trace lands where the command was started."""
    (tmp_path / "noisy_engine.py").write_text(NOISY_ENGINE)
    done = command("conform", "noisy_engine:NoisyEngine", "--json", "--examples", "0", "--trace", "run.jsonl",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert "printed in start" in done.stderr and "written to fd 1 in start" in done.stderr
    assert (tmp_path / "run.jsonl").stat().st_size > 0
    assert not (tmp_path / "elsewhere" / "run.jsonl").exists()


# ------------------------------------------------------------------------------------- exit codes


@pytest.fixture
def trace_run_raises(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    raised: list[BaseException] = []

    def explode(_args: object) -> int:
        raise raised[0]

    monkeypatch.setattr(cli_trace, "run", explode)
    yield raised


class EngineQuit(BaseException):
    def __str__(self) -> str:
        raise RuntimeError("even the message fails")


@pytest.mark.parametrize("raised", [RuntimeError("a bug"), SystemExit(3), SystemExit(0), EngineQuit(),
                                    GeneratorExit()])
def test_anything_raised_is_one_line_and_exit_2(
    raised: BaseException, trace_run_raises: list[BaseException], capsys: pytest.CaptureFixture[str]
) -> None:
    trace_run_raises.append(raised)
    code, _, err = run(capsys, "trace", os.devnull)
    assert_one_error_line(code, err)


# ------------------------------------------------------------------------------------- trace input


def test_a_first_line_of_over_a_mebibyte_of_utf8_is_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The sniff reads 1 MiB: a character cut at its end is not a reason to call the file binary."""
    machine = RequestMachine(Mode.AGGREGATED)
    for name in ("setup", "token_chunk", "terminal:stop"):
        machine.fire(parse_event(name))
    valid = "".join(json.dumps(step_record(step, "r1")) + "\n" for step in machine.history)
    long_line = "\u00e9" * (cli_trace.MAX_LINE_BYTES // 2 + 1) + "\n"  # two bytes each: the cut falls mid-character
    path = tmp_path / "t.jsonl"
    path.write_text(long_line + valid, encoding="utf-8")
    code, out, err = run(capsys, "trace", str(path))
    assert code == 1 and err == ""
    assert "line 1: MALFORMED" in out
    assert "request r1 [agg]: conforms" in out
