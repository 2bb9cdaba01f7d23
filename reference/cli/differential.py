"""``differential``: the same scenarios through Dynamo's compiled Rust adapter, our adapter and the model."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_modes,
    print_error,
)
from dynamo_backend_protocol.reference.differential.compare import Verdict
from dynamo_backend_protocol.reference.differential.run import ModeReport, run_modes
from dynamo_backend_protocol.reference.differential.upstream import UpstreamUnavailable


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
    parser.set_defaults(run=run)


T = TypeVar("T")


async def _interruptible(work: Coroutine[Any, Any, T]) -> T:
    """``work``, where a Ctrl-C cancels it (so its workers and folders are cleaned up) and is then
    reported as an interrupt even when a layer below (Dynamo's client, Hypothesis) absorbed the
    cancellation and let the run finish."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    heard = False

    def on_interrupt() -> None:
        nonlocal heard
        heard = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        result = await task
    except asyncio.CancelledError:
        if heard:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if heard:
        raise KeyboardInterrupt
    return result


def run(args: argparse.Namespace) -> int:
    if args.examples < 0:
        raise UsageError("--examples must be 0 or more")
    modes = parse_modes(args.mode)
    progress = None if args.json else _print_verdict
    try:
        reports = asyncio.run(_interruptible(run_modes(modes, args.examples, args.seed, progress=progress)))
    except UpstreamUnavailable as error:
        print_error("differential", str(error))
        return 2
    if args.json:
        print(json.dumps({"modes": [report.as_json() for report in reports]}, indent=2))
    else:
        for report in reports:
            print(_summary(report))
    if any(report.diverged for report in reports):
        return 1
    unserved = [report for report in reports if report.unavailable]
    if unserved:
        # The modes that ran are reported above; one line says which could not.
        reasons = "; ".join(f"{report.mode.value}: {report.unavailable}" for report in unserved)
        print_error("differential", f"Dynamo's worker could not serve {reasons}")
        return 2
    return 0


def _print_verdict(verdict: Verdict) -> None:
    word = verdict.word if verdict.agreed or verdict.explained else "DIVERGE"
    print(f"{verdict.play.mode.value:<7} {verdict.play.name:<34} {word}")
    if verdict.agreed:
        return
    print(f"        events: {', '.join(ev.name for ev in verdict.play.events)}")
    print(f"        model:        {verdict.play.predicted.brief()}")
    for side, seen in (("rust adapter", verdict.upstream), ("our adapter", verdict.reference)):
        if seen is not None:
            print(f"        {side + ':':<13} {seen.brief()}")
    for side, found in (("rust adapter", verdict.upstream_differences), ("our adapter", verdict.reference_differences)):
        for difference in found:
            print(f"        {side} differs: {difference}")


def _summary(report: ModeReport) -> str:
    line = (f"{report.mode.value}: {len(report.verdicts)} scenarios, {report.agreed} agreed, "
            f"{report.diverged} diverged, {report.explained} upstream findings, {report.seconds:.1f}s")
    if report.unavailable:
        line += f" (Dynamo's worker could not serve this mode: {report.unavailable}; our adapter only)"
    return line
