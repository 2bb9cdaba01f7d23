"""``conform``: run the conformance kit against an engine and print a report, one line per check."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shutil
import sys

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.cli.support import (
    DeferredOutputFile,
    Subparsers,
    UsageError,
    absolute_path,
    add_mode_option,
    error_line,
    parse_mode,
    print_error,
    stdout_to_stderr,
)
from dynamo_backend_protocol.reference.conformance import DEFAULT_EXAMPLES, run_conformance
from dynamo_backend_protocol.reference.conformance.catalogue import catalogue_text
from dynamo_backend_protocol.reference.conformance.kit import (
    DEFAULT_CANCEL_DEADLINE,
    DEFAULT_CLEANUP_TIMEOUT,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STREAM_TIMEOUT,
)
from dynamo_backend_protocol.reference.conformance.progress import LinePrinter, live_display
from dynamo_backend_protocol.reference.conformance.raw_kit import RawReport, is_raw_engine, run_raw_conformance
from dynamo_backend_protocol.reference.conformance.report import REPORT_COLUMNS, ConformanceReport
from dynamo_backend_protocol.reference.conformance.run_loop import Outcome, run_abandoning
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError, describe_error
from dynamo_backend_protocol.reference.conformance.target import load_engine_factory
from dynamo_backend_protocol.reference.conformance.watchdog import MAX_SECONDS
from dynamo_backend_protocol.reference.runtime import command as runtime_command
from dynamo_backend_protocol.reference.traces.writer import JsonlTraceWriter

ERROR_PREFIX = error_line("conform", "")
"""How a line that ends the run early starts: the one error shape of every command."""
BUNDLED = "dynamo_backend_protocol.reference.conformance.sample_engine:SampleEngine"


DESCRIPTION = """\
Check an engine against the protocol, with two kits in one run:
  upstream's kit    its checks, under its failure names, on the raw engine
                    (no adapter, never abort());
  the runtime kit   checks upstream lacks, through the reference adapter, which
                    calls abort() on a stop or kill as Dynamo's runtime does.

A failure in one kit never skips a check of the other; a skip says why.  The report ends with a recap of
the failed checks and one line per kit.  Every check, its kit, meaning and fix: --list-checks."""

def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "conform", help="check an engine against the protocol (default: the bundled SampleEngine)",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "engine",
        nargs="?",
        metavar="ENGINE",
        help="module:attribute naming an engine class or zero-argument factory (importable from here)",
    )
    add_mode_option(parser, allow_all=False, default=None)
    parser.add_argument(
        "--engine-args", metavar="ARGS", default=None,
        help="build ENGINE with its from_args(argv) classmethod, argv being ARGS split like a shell "
        "(e.g. \"--disaggregation-mode decode\"); the mode defaults to the one the engine declares",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the report as one JSON object, at the end")
    shown.add_argument("--quiet", action="store_true",
                       help="print nothing while the checks run, then the whole table (default: each check's "
                       "line as it finishes, and a live progress line on a terminal)")
    parser.add_argument("--cancel-deadline", "--deadline", dest="cancel_deadline", type=_positive_seconds,
                        default=DEFAULT_CANCEL_DEADLINE, metavar="S",
                        help=f"seconds a cancelled stream may take to end (default {DEFAULT_CANCEL_DEADLINE:g}); "
                        "--deadline is its earlier name")
    parser.add_argument("--start-timeout", type=_positive_seconds, default=DEFAULT_START_TIMEOUT, metavar="S",
                        help=f"seconds start() may take, e.g. loading weights (default {DEFAULT_START_TIMEOUT:g})")
    parser.add_argument("--cleanup-timeout", type=_positive_seconds, default=DEFAULT_CLEANUP_TIMEOUT, metavar="S",
                        help=f"seconds each cleanup() may take (default {DEFAULT_CLEANUP_TIMEOUT:g})")
    parser.add_argument("--stream-timeout", type=_positive_seconds, default=DEFAULT_STREAM_TIMEOUT, metavar="S",
                        help=f"seconds each stream may take to end (default {DEFAULT_STREAM_TIMEOUT:g})")
    parser.add_argument("--examples", type=_count, default=DEFAULT_EXAMPLES, metavar="N",
                        help=f"schedules the property-based phase draws, 0 to skip it (default {DEFAULT_EXAMPLES})")
    parser.add_argument("--trace", metavar="FILE", type=absolute_path,
                        help="write every adapter-driven request's trace as JSON Lines")
    parser.add_argument("--list-checks", action="store_true",
                        help="print every check (name, kit, what passing means, how to fix a failure) and exit")
    runtime_command.add_options(parser)
    parser.set_defaults(run=run)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    if not value <= MAX_SECONDS:  # inf, nan, or past what the clocks can add (OverflowError)
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS:g} seconds (a week), got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.list_checks:
        print(catalogue_text())
        return 0
    if args.runtime == "dynamo":
        return runtime_command.run(args)
    # With --json the one JSON object is alone on stdout: what the engine prints goes to stderr.
    with stdout_to_stderr() if args.json else contextlib.nullcontext():
        outcome = _judge(args)
    # The trace file is closed by now, whatever happened; only then may the process end early.
    if outcome.interrupted:
        _end_now_if_abandoned(outcome, "interrupted", 130)
        raise KeyboardInterrupt
    try:
        report = outcome.result()
    except EngineFactoryError as error:
        _end_now_if_abandoned(outcome, f"{ERROR_PREFIX}{error}", 2)
        raise UsageError(str(error)) from None
    except BaseException as error:  # Ctrl-C never lands here: run_abandoning takes it
        # The engine broke the run outside any check (or the kit has a bug): one line, exit 1.
        message = f"the run could not go on: {describe_error(error)}"
        _end_now_if_abandoned(outcome, f"{ERROR_PREFIX}{message}", 1)
        print_error("conform", message)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif isinstance(report, RawReport):
        print(report.render())
    else:
        columns = shutil.get_terminal_size((REPORT_COLUMNS, 24)).columns if sys.stdout.isatty() else REPORT_COLUMNS
        print(report.render(columns) if args.quiet else report.render_ending(columns))
    code = 0 if report.ok else 1
    _end_now_if_abandoned(outcome, None, code)
    return code


def _judge(args: argparse.Namespace) -> Outcome[ConformanceReport] | Outcome[RawReport]:
    mode = parse_mode(args.mode) if args.mode is not None else None
    factory: EngineFactory
    if args.engine is None:
        factory, label = functools.partial(SampleEngine, mode=mode or Mode.AGGREGATED), BUNDLED
    else:
        factory, label = _load(args.engine), args.engine.strip()
    if is_raw_engine(factory):
        return _run_raw(factory, label, args)
    with contextlib.ExitStack() as stack:
        sink = None
        trace_files: list[DeferredOutputFile] = []
        if args.trace is not None:
            # A write error ends the writing, not the run: it is reported after the report.
            trace_file = DeferredOutputFile(args.trace, "the trace file")
            stack.callback(trace_file.close)
            trace_files.append(trace_file)
            sink = JsonlTraceWriter(trace_file)  # type: ignore[arg-type]
        # The adapter logs engine misbehaviour as warnings; the report already says it, once.
        logging.getLogger("dynamo_backend_protocol").addHandler(logging.NullHandler())
        at_the_end = args.json or args.quiet
        with contextlib.nullcontext(None) if at_the_end else _display() as events:
            return run_abandoning(run_conformance(
                factory, mode=mode, engine_args=args.engine_args, cancel_deadline=args.cancel_deadline,
                examples=args.examples, start_timeout=args.start_timeout, cleanup_timeout=args.cleanup_timeout,
                stream_timeout=args.stream_timeout, trace_sink=sink, label=label, events=events,
            ), flush_at_exit=trace_files, error_prefix=ERROR_PREFIX)


def _run_raw(factory: EngineFactory, label: str, args: argparse.Namespace) -> Outcome[RawReport]:
    """A RawEngine (JSON in and out, from Dynamo 1.3.1) is judged by the raw kit (conformance/raw_kit.py)."""
    if args.mode is not None or args.trace is not None:
        raise UsageError(f"{label} is a raw engine: --mode and --trace apply to token engines only")
    return run_abandoning(run_raw_conformance(
        factory, engine_args=args.engine_args, cancel_deadline=args.cancel_deadline,
        start_timeout=args.start_timeout, cleanup_timeout=args.cleanup_timeout,
        stream_timeout=args.stream_timeout, label=label,
    ), error_prefix=ERROR_PREFIX)


def _end_now_if_abandoned(outcome: Outcome[ConformanceReport] | Outcome[RawReport], line: str | None,
                          code: int) -> None:
    """Engine threads the run could not stop would hold the process at exit (Python joins them): the run
    is over and its output written, so the process ends here instead, without waiting for them."""
    if not outcome.must_not_wait:
        return
    if line is not None:
        print(line, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _display() -> contextlib.AbstractContextManager[LinePrinter]:
    if sys.stdout.isatty():
        return live_display(sys.stdout)
    return contextlib.nullcontext(LinePrinter(sys.stdout))


def _load(reference: str) -> EngineFactory:
    try:
        return load_engine_factory(reference)
    except EngineFactoryError as error:
        raise UsageError(str(error)) from None
