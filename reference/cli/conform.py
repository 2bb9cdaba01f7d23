"""``conform``: run the conformance kit against an engine and print a table of checks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.cli.support import Subparsers, UsageError, add_mode_option, parse_mode
from dynamo_backend_protocol.reference.conformance import DEFAULT_EXAMPLES, run_conformance
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError
from dynamo_backend_protocol.reference.conformance.target import load_engine_factory
from dynamo_backend_protocol.reference.traces.writer import JsonlTraceWriter

BUNDLED = "dynamo_backend_protocol.reference.conformance.sample_engine:SampleEngine"


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "conform", help="check an engine against the protocol (default: the bundled SampleEngine)"
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
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--deadline", type=_positive_seconds, default=2.0, metavar="S",
                        help="seconds a cancelled stream may take to end (default 2)")
    parser.add_argument("--examples", type=_count, default=DEFAULT_EXAMPLES, metavar="N",
                        help=f"schedules the property-based phase draws, 0 to skip it (default {DEFAULT_EXAMPLES})")
    parser.add_argument("--trace", metavar="FILE", help="write every adapter-driven request's trace as JSON Lines")
    parser.set_defaults(run=run)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
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
    mode = parse_mode(args.mode) if args.mode is not None else None
    factory: EngineFactory
    if args.engine is None:
        factory, label = functools.partial(SampleEngine, mode=mode or Mode.AGGREGATED), BUNDLED
    else:
        factory, label = _load(args.engine), args.engine.strip()
    with contextlib.ExitStack() as stack:
        sink = None
        if args.trace is not None:
            try:
                sink = JsonlTraceWriter(stack.enter_context(open(args.trace, "w", encoding="utf-8")))
            except OSError as error:
                raise UsageError(f"cannot write the trace file {args.trace!r}: {error.strerror}") from None
        # The adapter logs engine misbehaviour as warnings; the report already says it, once.
        logging.getLogger("dynamo_backend_protocol").addHandler(logging.NullHandler())
        try:
            report = asyncio.run(run_conformance(
                factory, mode=mode, engine_args=args.engine_args, cancel_deadline=args.deadline,
                examples=args.examples, trace_sink=sink, label=label,
            ))
        except EngineFactoryError as error:
            raise UsageError(str(error)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _load(reference: str) -> EngineFactory:
    try:
        return load_engine_factory(reference)
    except EngineFactoryError as error:
        raise UsageError(str(error)) from None
