"""``export``: the request table of one mode, or a composition, as a Promela model for SPIN."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore.promela import export_promela
from dynamo_backend_protocol.model.explore.promela_engine import export_engine_promela
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_mode,
    request_count,
    writable_file,
)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the request table of one mode as a Promela model (invariants and liveness as LTL)",
    )
    parser.add_argument("--format", choices=("promela",), default="promela", help="the only format: promela")
    add_mode_option(parser, allow_all=False, default="agg")
    parser.add_argument(
        "--machine",
        choices=("request", "disagg"),
        default="request",
        help="disagg: a decode request with its KV transfer (implies --mode decode)",
    )
    parser.add_argument(
        "--requests",
        type=request_count,
        metavar="N",
        help="N requests of the mode sharing one engine, with its lifecycle (liveness too for N up to 2)",
    )
    parser.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with_transfer = args.machine == "disagg"
    mode = Mode.DECODE if with_transfer else parse_mode(args.mode)
    if args.requests is not None and with_transfer:
        raise UsageError("--requests composes request machines; it does not take --machine disagg")
    if args.output is not None:
        # Checked before the export, which takes seconds for a composition.
        writable_file("-o", args.output)
    if args.requests is None:
        model = export_promela(mode, DEFAULT_TABLE, with_transfer)
    else:
        model = export_engine_promela(Composition(args.requests, mode), DEFAULT_TABLE)
    if args.output is None:
        sys.stdout.write(model)
        return 0
    try:
        Path(args.output).write_text(model)
    except OSError as error:
        raise UsageError(f"-o {args.output}: cannot write it: {error.strerror or error}") from None
    return 0
