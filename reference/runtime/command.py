"""``conform ENGINE --runtime dynamo``, the command-line side: options in, report out.

Only the report reaches the terminal (or one JSON object with ``--json``);
the runtime's own logs go to the file the report names (``--runtime-log``,
by default a new file in the temporary folder), or to the terminal with
``--verbose``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.cli.interrupt import run_interruptible
from dynamo_backend_protocol.reference.cli.support import UsageError, parse_mode
from dynamo_backend_protocol.reference.conformance.session import EngineFactoryError
from dynamo_backend_protocol.reference.conformance.target import load_engine_factory
from dynamo_backend_protocol.reference.runtime.conform import RuntimeOptions, run_runtime_conformance
from dynamo_backend_protocol.reference.runtime.launcher import (
    RuntimeUnavailable,
    default_log_path,
    quiet_client_runtime,
)

RUNTIMES = ("reference", "dynamo")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="reference",
        help="who drives the engine: our reference adapter (default), or Dynamo's real Worker on 127.0.0.1 "
        "with a real Dynamo client (needs Dynamo's packages)",
    )
    parser.add_argument("--runtime-log", metavar="FILE", default=None,
                        help="with --runtime dynamo: where the runtime's own logs go (default: a new file in the "
                        "temporary folder, named in the report)")
    parser.add_argument("--verbose", action="store_true",
                        help="with --runtime dynamo: show the runtime's own logs instead of writing them to a file")


def run(args: argparse.Namespace) -> int:
    if args.engine is None:
        raise UsageError("--runtime dynamo needs ENGINE (e.g. dynamo.common.backend.sample_engine:SampleLLMEngine)")
    if not args.verbose:
        quiet_client_runtime()  # before ENGINE's module is imported: it may load Dynamo's runtime
    try:
        factory = load_engine_factory(args.engine)
    except EngineFactoryError as error:
        raise UsageError(str(error)) from None
    log_path = Path(args.runtime_log) if args.runtime_log else default_log_path()
    try:
        log_path.open("ab").close()
    except OSError as error:
        raise UsageError(f"cannot write the runtime log {str(log_path)!r}: {error.strerror}") from None
    mode: Mode | None = parse_mode(args.mode) if args.mode is not None else None
    options = RuntimeOptions(
        engine=args.engine, engine_args=args.engine_args, mode=mode, cancel_deadline=args.cancel_deadline,
        start_timeout=args.start_timeout, stream_timeout=args.stream_timeout, cleanup_timeout=args.cleanup_timeout,
        log_path=log_path, verbose=args.verbose, examples=args.examples,
    )
    try:
        result = run_interruptible(run_runtime_conformance(factory, options))
    except (EngineFactoryError, RuntimeUnavailable) as error:
        raise UsageError(str(error)) from None
    if args.trace is not None:
        try:
            Path(args.trace).write_text("".join(line + "\n" for line in result.engine_lines), encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write the trace file {args.trace!r}: {error.strerror}") from None
    report = result.report
    if args.json:
        print(json.dumps({**report.as_dict(), "runtime": "dynamo", "runtime_log": str(result.log_path)}, indent=2))
    else:
        print(report.render())
        print(f"runtime log: {result.log_path}")
    return 0 if report.ok else 1
