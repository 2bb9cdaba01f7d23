"""``bench``: the adapter's cost against the bare engine and the floor, exploration
and conformance times; on request a per-chunk profile, a soak, and the trace
validator's speed and memory.  Targets are shown; ``--check`` judges them (exit 1 when one is missed)."""

from __future__ import annotations

import argparse
import asyncio
import json

from dynamo_backend_protocol.reference.bench.engines import FLOOR_DESCRIPTION
from dynamo_backend_protocol.reference.bench.report import CORE, SECTIONS, BenchOptions, BenchReport, run_bench
from dynamo_backend_protocol.reference.bench.rounds import MIN_ROUNDS, Figure
from dynamo_backend_protocol.reference.bench.targets import UnknownTarget
from dynamo_backend_protocol.reference.cli.support import Subparsers, UsageError, emit
from dynamo_backend_protocol.reference.conformance import run_conformance
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine

_SECTION_HELP = {
    "adapter": "adapter vs bare engine vs floor, per chunk, interleaved rounds",
    "explore": "exhaustive exploration of the model, all modes",
    "conformance": "a conformance run of the bundled engine",
    "profile": "where the adapter's time per chunk goes (measured, rung by rung)",
    "soak": "100,000 concurrent requests ending every way, and a 5,000,000-chunk stream",
    "trace": "trace validator speed and peak memory on a 500,000-request file, beside json.loads",
    "recorder": "the deployment recorder's cost per chunk: off (the engine itself) and on, beside the bare engine",
    "checker": "the compiled explorer's states/s and bytes/state beside SPIN's, 3 decode requests on one engine",
}


_FLAGS = {"trace": "trace-validator"}
"""Sections whose option is not their name: ``--trace`` names an output file elsewhere (conform)."""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        # No abbreviations: --trace must not quietly mean --trace-validator here, as it is a file elsewhere.
        allow_abbrev=False,
        help="measure the adapter's cost, and on request a profile, a soak, the trace validator",
        description=(
            "Without a section option, runs the adapter, explore and conformance sections. "
            "Timed figures are medians over interleaved rounds of thread CPU time, with their interquartile range."
        ),
    )
    for section in SECTIONS:
        parser.add_argument(f"--{_FLAGS.get(section, section)}", dest=section, action="store_true",
                            help=_SECTION_HELP[section])
    parser.add_argument("--all", action="store_true", help="every section")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a first look or a test")
    parser.add_argument("--check", action="store_true",
                        help="judge the targets: exit 1 when one is missed (without it they are shown, not judged)")
    parser.add_argument("--rounds", type=_rounds, default=MIN_ROUNDS, metavar="N",
                        help=f"interleaved rounds per comparison (at least {MIN_ROUNDS}, the default)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME=BOUND", type=_bound,
                        help="judge a target against another bound, e.g. adapter.ratio_trivial=3.0 (repeatable)")
    parser.set_defaults(run=run)


def _rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < MIN_ROUNDS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_ROUNDS}, got {value}")
    return value


def _bound(text: str) -> tuple[str, float]:
    name, equals, bound = text.partition("=")
    try:
        if not equals:
            raise ValueError
        return name.strip(), float(bound)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


async def _conformance() -> None:
    await run_conformance(SampleEngine)


def run(args: argparse.Namespace) -> int:
    chosen = SECTIONS if args.all else tuple(section for section in SECTIONS if getattr(args, section))
    options = BenchOptions(sections=chosen or CORE, quick=args.quick, rounds=args.rounds, bounds=dict(args.target))
    try:
        report = asyncio.run(run_bench(options, _conformance))
    except UnknownTarget as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        emit(render(report, judged=args.check))
    return 1 if args.check and not report.ok else 0


def render(report: BenchReport, judged: bool = True) -> str:
    """The report as text; ``judged`` (``--check``) decides whether a missed target is a failure
    (the exit status says so too) or only shown."""
    machine = report.machine
    lines = [f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['date']}"]
    if report.profile is not None or {"adapter", "explore"} & set(report.sections):
        lines.append(f"timed figures: median over {report.rounds} interleaved rounds of thread CPU time (IQR); "
                     "a round reads each variant's requests in turn")
    for name, figures in report.sections.items():
        lines.append(f"{name}:")
        lines.extend(f"  {key:<32} {_show(value)}" for key, value in figures.items() if value is not None)
        if name == "adapter":
            lines.append(f"  floor: {FLOOR_DESCRIPTION}")
    if report.profile is not None:
        lines.extend(_profile_lines(report))
    if not report.verdicts:
        lines.append("no targets in these sections")
        return "\n".join(lines)
    lines.append("targets:")
    for verdict in report.verdicts:
        shown = "n/a" if verdict.value is None else f"{verdict.value:,.4g}"
        mark = "ok    " if verdict.ok else "MISSED"
        lines.append(f"  {mark} {verdict.target.name:<36} {shown:>12}   target {verdict.target.describe()}")
    if report.ok:
        lines.append("all targets met")
    elif judged:
        lines.append("SOME TARGETS MISSED")
    else:
        missed = sum(not verdict.ok for verdict in report.verdicts)
        lines.append(f"{missed} target(s) missed; shown, not judged (give --check to exit 1 on a miss)")
    return "\n".join(lines)


def _show(value: Figure | float | int | str) -> str:
    if isinstance(value, Figure):
        return value.show()
    if isinstance(value, bool | str):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def _profile_lines(report: BenchReport) -> list[str]:
    profile = report.profile
    assert profile is not None
    lines = [f"profile: per chunk, {profile.chunks:,} chunks per round; each row is a rung minus the one before it"]
    for row in profile.rows:
        lines.append(f"  {row.cost.median:>8.1f} ns  (IQR {row.cost.q1:>7.1f} to {row.cost.q3:>7.1f})  {row.what}")
    lines.append(f"  adapter {profile.adapter.show()}; bare engine {profile.bare.show()}")
    return lines
