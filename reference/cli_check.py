"""``check``: explore the request machine exhaustively and report every invariant."""

from __future__ import annotations

import argparse
import json

from dynamo_backend_protocol.model import ExplorationReport, explore_all
from dynamo_backend_protocol.reference.cli_support import Subparsers, add_mode_option, parse_modes


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("check", help="explore the protocol model and check every invariant")
    add_mode_option(parser, allow_all=True, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = explore_all(parse_modes(args.mode))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report))
    return 0 if report.ok else 1


def render(report: ExplorationReport) -> str:
    lines: list[str] = []
    for mode, mode_report in report.modes.items():
        lines.append(
            f"mode {mode.value}: {mode_report.states} states, {mode_report.transitions} transitions, "
            f"{mode_report.seconds * 1000:.1f} ms"
        )
        for result in mode_report.invariants:
            mark = "holds   " if result.holds else "VIOLATED"
            lines.append(f"  {mark} {result.rule:<26} {result.name}")
            if not result.holds:
                lines.append(f"           counterexample: {' -> '.join(result.counterexample or [])}")
                if result.detail:
                    lines.append(f"           {result.detail}")
    verdict = "all invariants hold" if report.ok else "INVARIANTS VIOLATED"
    lines.append(f"{verdict} in {len(report.modes)} mode(s)")
    return "\n".join(lines)
