"""``trace``: check a recorded JSON Lines trace against the model.

Exit codes: 0 every request conforms; 1 some request diverges, some line is
malformed, or there is no record at all; 2 the input cannot be read at all
(missing, a directory, not text).  The file is streamed line by line and so
is the report, text or ``--json``: each request is printed once its verdict
is final (see :mod:`model.traces.check` for what is kept meanwhile).  Text
output escapes what is not printable, so a request id cannot forge a line.
"""

from __future__ import annotations

import argparse
import codecs
import json
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.rules import summary as rule_summary
from dynamo_backend_protocol.model.traces.check import (
    Divergence,
    Malformed,
    RequestSink,
    RequestSummary,
    TraceChecker,
    TraceReport,
)
from dynamo_backend_protocol.model.traces.engine_side import EngineSideRun
from dynamo_backend_protocol.model.traces.observed import ObservationDivergence
from dynamo_backend_protocol.model.vocabulary import ActionKind, ControlState
from dynamo_backend_protocol.reference.cli.support import Subparsers, UsageError, emit

MAX_LINE_BYTES = 1 << 20
"""A longer line is reported as malformed and skipped, so memory stays bounded."""


class NotText(ProtocolError):
    """The input does not look like a text file at all."""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="check a JSON Lines trace against the model (exit 0 conforms, 1 diverges, 2 unreadable)",
        description=(
            "Check each request of a JSON Lines trace against the model: an observation trace (one object "
            "per thing that crossed a boundary: request, obs, ...; what the adapter's trace writer writes) "
            "has its model run inferred and checked, a step trace (request, mode, event, state, actions) is "
            "replayed; a trace recorded at the engine's side only (record(engine, sink), first line "
            "engine.generate) is checked as far as that side shows, saying per request what it could not judge. "
            "Per request: conformance, or the first divergence with its line number, expected, "
            "observed and rule. Use - for standard input."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="trace file, or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = JsonOutput(sys.stdout) if args.json else TextOutput(sys.stdout)
    report = check_file(args.file, output.request)
    output.finish(report)
    return 0 if report.ok else 1


def check_file(path: str, on_request: RequestSink | None = None) -> TraceReport:
    """Check the trace at ``path`` (``-``: standard input).  Each request's summary goes to
    ``on_request`` as soon as it is final; without it the report collects them all."""
    checker = TraceChecker(on_request=on_request)
    try:
        if path == "-":
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:
                raise UsageError("standard input is closed or not a byte stream")
            _feed(checker, stdin)
        else:
            with open(path, "rb") as stream:
                _feed(checker, stream)
    except NotText:
        raise UsageError(f"{_name(path)} is not a text file") from None
    except OSError as error:
        raise UsageError(f"cannot read {_name(path)}: {error.strerror or error}") from None
    return checker.report()


def _name(path: str) -> str:
    return "standard input" if path == "-" else path


def _feed(checker: TraceChecker, stream: BinaryIO) -> None:
    for number, text, problem in read_lines(stream):
        if text is None:
            checker.reject(number, problem or "unreadable line")
        else:
            checker.feed(number, text)


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield ``(line number, raw line, None)`` or ``(line number, None, problem)``.

    The first line decides whether this is text at all: undecodable bytes or a
    NUL there raise :class:`NotText`; later, the checker reports them as that
    line's problem.
    """
    readline = stream.readline
    limit = MAX_LINE_BYTES + 1
    raw = readline(limit)
    if raw and not _looks_like_text(raw):
        raise NotText
    number = 0
    while raw:
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            _skip_rest_of_line(stream)
            yield number, None, f"line is longer than {MAX_LINE_BYTES} bytes"
        else:
            yield number, raw, None
        raw = readline(limit)


def _looks_like_text(raw: bytes) -> bool:
    """Valid UTF-8 without NUL; the read may have cut a character at its end (a first line
    longer than the read), which is not a fault of the file."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in raw


def _skip_rest_of_line(stream: BinaryIO) -> None:
    while True:
        more = stream.readline(MAX_LINE_BYTES)
        if not more or more.endswith(b"\n"):
            return


def _actions(actions: tuple[ActionKind, ...] | None) -> str:
    if actions is None:
        return "-"
    return "[" + ", ".join(action.value for action in actions) + "]"


def _observed_divergence_lines(found: ObservationDivergence) -> list[str]:
    lines = [f"  line {found.line}: {found.observation} in {found.before.value}: {found.reason}",
             f"    expected: {found.expected}",
             f"    observed: {found.observed}"]
    if found.rule is not None:
        lines.append(f"    rule {found.rule}: {rule_summary(found.rule)}")
    return lines


def _divergence_lines(found: Divergence | ObservationDivergence) -> list[str]:
    if isinstance(found, ObservationDivergence):
        return _observed_divergence_lines(found)
    lines = [f"  line {found.line}: event {found.event.name} in {found.before.value}: {found.reason}"]
    if found.expected_state is not None:
        lines.append(f"    expected: state {found.expected_state.value}, actions {_actions(found.expected_actions)}")
    elif found.allowed:
        # Imported for a divergence only: it brings the explorer, which a conforming trace never needs.
        from dynamo_backend_protocol.model.teach.narrate import describe_events

        lines.append(f"    allowed in {found.before.value}: {describe_events(found.allowed)}")
    lines.append(f"    observed: state {found.observed_state.value}, actions {_actions(found.observed_actions)}")
    if found.rule is not None:
        lines.append(f"    rule {found.rule}: {rule_summary(found.rule)}")
    return lines


def _request_lines(summary: RequestSummary) -> list[str]:
    mode = summary.mode.value if summary.mode is not None else "?"
    head = f"request {summary.request} [{mode}]"
    skipped = f" ({summary.skipped} later line(s) not checked)" if summary.skipped else ""
    if summary.divergence is not None:
        return [f"{head}: DIVERGES after {summary.checked} conforming line(s){skipped}",
                *_divergence_lines(summary.divergence)]
    if summary.malformed is not None:
        found = summary.malformed
        return [f"{head}: MALFORMED line {found.line}: {found.problem}{skipped}"]
    assert summary.state is not None
    control = summary.state.control
    ending = "ends in Done" if control is ControlState.DONE else f"still in {control.value}"
    if not isinstance(summary.run, EngineSideRun):
        return [f"{head}: conforms ({summary.checked} line(s), {ending})"]
    lines = [f"{head}: conforms on the engine's side ({summary.checked} line(s), {ending})"]
    unjudged = summary.not_judged
    if unjudged:
        lines.append("  not judged, the client's side not being observed: " + "; ".join(unjudged))
    return lines


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (newlines, ANSI escapes, lone
    surrogates), so what a trace names cannot start a line of its own or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _verdict_lines(report: TraceReport) -> list[str]:
    lines = [f"line {orphan.line}: MALFORMED: {orphan.problem}" for orphan in report.orphans]
    hidden = report.orphan_count - len(report.orphans)
    if hidden:
        lines.append(f"... and {hidden} more malformed line(s) naming no request")
    counts = report.counts()
    if not report.lines:
        lines.append("no trace records found")
    verdict = "trace conforms" if report.ok else "TRACE DOES NOT CONFORM"
    lines.append(
        f"{verdict}: {report.total} request(s): {counts['conforms']} conform, {counts['diverges']} diverge, "
        f"{counts['malformed']} malformed; {report.orphan_count} malformed line(s) naming no request"
    )
    return lines


def render(report: TraceReport) -> str:
    """The whole text report of a checker that collected its requests."""
    lines = [line for summary in report.requests for line in _request_lines(summary)]
    return "\n".join(printable(line) for line in [*lines, *_verdict_lines(report)])


class TextOutput:
    """Prints each request's lines as soon as it is final, then the verdict."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def request(self, summary: RequestSummary) -> None:
        emit("\n".join(printable(line) for line in _request_lines(summary)), self._out)

    def finish(self, report: TraceReport) -> None:
        emit("\n".join(printable(line) for line in _verdict_lines(report)), self._out)
        self._out.flush()


def _malformed_dict(found: Malformed) -> dict[str, object]:
    return {"line": found.line, "problem": found.problem, "request": found.request}


def _summary_dict(summary: RequestSummary) -> dict[str, object]:
    entry: dict[str, object] = {
        "request": summary.request,
        "mode": None if summary.mode is None else summary.mode.value,
        "verdict": summary.verdict,
        "first_line": summary.first_line,
        "checked": summary.checked,
        "skipped": summary.skipped,
        "state": None if summary.state is None else summary.state.control.value,
    }
    if isinstance(summary.run, EngineSideRun):
        entry["engine_side"] = True
        entry["not_judged"] = summary.not_judged
    if isinstance(summary.divergence, ObservationDivergence):
        observed = summary.divergence
        entry["divergence"] = {
            "line": observed.line,
            "observation": observed.observation,
            "before": observed.before.value,
            "reason": observed.reason,
            "rule": observed.rule,
            "expected": observed.expected,
            "observed": observed.observed,
            "owed_at": observed.owed_at,
        }
    elif summary.divergence is not None:
        found = summary.divergence
        entry["divergence"] = {
            "line": found.line,
            "event": found.event.name,
            "before": found.before.value,
            "reason": found.reason,
            "rule": found.rule,
            "expected_state": None if found.expected_state is None else found.expected_state.value,
            "expected_actions": None if found.expected_actions is None else [a.value for a in found.expected_actions],
            "observed_state": found.observed_state.value,
            "observed_actions": [a.value for a in found.observed_actions],
            "allowed": [ev.name for ev in found.allowed],
        }
    if summary.malformed is not None:
        entry["malformed"] = _malformed_dict(summary.malformed)
    return entry


def _closing_fields(report: TraceReport) -> dict[str, object]:
    return {
        "malformed_without_request": [_malformed_dict(orphan) for orphan in report.orphans],
        "malformed_without_request_count": report.orphan_count,
        "lines": report.lines,
        "counts": report.counts(),
        "ok": report.ok,
    }


class JsonOutput:
    """Streams one JSON object: ``requests`` first, one entry per line as each request is final,
    then the fields only known at the end (``ok``, ``lines``, ``counts``, the orphans)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = False

    def request(self, summary: RequestSummary) -> None:
        separator = ",\n    " if self._started else '{\n  "requests": [\n    '
        self._out.write(separator + json.dumps(_summary_dict(summary)))
        self._started = True

    def finish(self, report: TraceReport) -> None:
        opening = "\n  ]," if self._started else '{\n  "requests": [],'
        self._out.write(opening + json.dumps(_closing_fields(report), indent=2)[1:] + "\n")
        self._out.flush()
