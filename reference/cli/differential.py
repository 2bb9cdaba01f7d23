"""``differential``: the same scenarios through Dynamo's compiled Rust adapter, our adapter and the model."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from dynamo_backend_protocol.reference.cli.interrupt import run_interruptible
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_modes,
    print_error,
)
from dynamo_backend_protocol.reference.differential.compare import Verdict
from dynamo_backend_protocol.reference.differential.probe import run_probe
from dynamo_backend_protocol.reference.differential.report import json_report, text_report, verdict_lines
from dynamo_backend_protocol.reference.differential.run import run_modes, run_raw
from dynamo_backend_protocol.reference.differential.surface import (
    ReleaseMismatch,
    ReleaseSurface,
    installed_release,
    surface,
)
from dynamo_backend_protocol.reference.differential.upstream import UpstreamUnavailable, dynamo_installed


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "differential",
        help="run the scenarios through Dynamo's real adapter, ours and the model, and compare",
        description=(
            "For each teaching scenario and each drawn schedule, in each mode: play it through Dynamo's "
            "compiled Rust adapter (a real Worker process on 127.0.0.1) and through our adapter with a "
            "scripted recording engine, and hold both to what the model allows. Exit 0 when all agree, "
            "1 on a divergence, 2 when Dynamo is not installed or a mode's worker cannot start."
        ),
    )
    add_mode_option(parser, allow_all=True, default="all")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--examples", type=int, default=20, metavar="N",
                        help="drawn schedules per mode (default: 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the drawn schedules (default: 0)")
    parser.add_argument("--dynamo-version", metavar="X.Y.Z",
                        help="the Dynamo release this run must be against; exit 2 if another is installed "
                             "(default: whichever is installed; one venv per release)")
    parser.add_argument("--runtime-log", type=Path, metavar="FILE",
                        help="where the runtime's own log lines go, the client's and the workers' "
                             "(default: a file in the temporary folder, named in the report)")
    parser.add_argument("--raw", action="store_true",
                        help="play the raw engine adapter's scenarios (a RawEngine worker, from Dynamo 1.3.1) "
                             "instead of the modes' token scenarios")
    parser.add_argument("--probe", action="store_true",
                        help="play the health-check canary's answers (from Dynamo 1.3.1) and compare the "
                             "endpoint's health with the model's")
    parser.add_argument("--verbose", action="store_true",
                        help="let the runtime's own log lines through to this terminal's stderr instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.examples < 0:
        raise UsageError("--examples must be 0 or more")
    if args.raw and args.probe:
        raise UsageError("--raw and --probe are separate runs; give one")
    if args.verbose and args.runtime_log is not None:
        raise UsageError("--verbose and --runtime-log both say where the runtime's log goes; give one")
    modes = parse_modes(args.mode)
    release = _release(args.dynamo_version)
    runtime_log = None if args.verbose else _runtime_log(args.runtime_log)
    progress = None if args.json else _print_verdict
    if args.probe:
        return _run_probe(release, runtime_log, args.json)
    try:
        if args.raw:
            reports = [run_interruptible(run_raw(release, runtime_log, progress))]
        else:
            reports = run_interruptible(run_modes(modes, args.examples, args.seed, progress=progress,
                                                    release=release, runtime_log=runtime_log))
    except UpstreamUnavailable as error:
        print_error("differential", str(error))
        return 2
    assert release is not None  # a run that got this far had Dynamo installed
    if args.json:
        print(json.dumps(json_report(reports, release, runtime_log), indent=2))
    else:
        print("\n".join(text_report(reports, release, runtime_log)))
    if any(report.diverged for report in reports):
        return 1
    unserved = [report for report in reports if report.unavailable]
    if unserved:
        # The modes that ran are reported above; one line says which could not.
        reasons = "; ".join(f"{report.name}: {report.unavailable}" for report in unserved)
        print_error("differential", f"Dynamo's worker could not serve {reasons}")
        return 2
    return 0


def _release(expected: str | None) -> ReleaseSurface | None:
    """The installed release's surface; None when Dynamo is absent (the run then says so)."""
    if not dynamo_installed():
        return None
    try:
        return surface(installed_release(expected))
    except ReleaseMismatch as error:
        raise UsageError(str(error)) from None


def _runtime_log(path: Path | None) -> Path:
    """The runtime log, emptied for this run; a folder that does not exist is the user's to fix."""
    if path is None:
        path = Path(tempfile.gettempdir()) / f"dbp-differential-{os.getpid()}.log"
    try:
        path.write_text("", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--runtime-log {path}: {error.strerror}") from None
    return path


def _run_probe(release: ReleaseSurface | None, runtime_log: Path | None, as_json: bool) -> int:
    try:
        report = run_interruptible(run_probe(release, runtime_log))
    except UpstreamUnavailable as error:
        print_error("differential", str(error))
        return 2
    if as_json:
        print(json.dumps({**report.as_json(), "runtime_log": None if runtime_log is None else str(runtime_log)},
                         indent=2))
    else:
        for verdict in report.verdicts:
            print(verdict.line())
        print(report.line())
        if runtime_log is not None:
            print(f"runtime log (workers): {runtime_log}")
    return 1 if report.diverged else 0


def _print_verdict(verdict: Verdict) -> None:
    print("\n".join(verdict_lines(verdict)))

