"""``mutate``: the mutation score of ``check`` over the request table, as figures."""

from __future__ import annotations

import argparse
import json

from dynamo_backend_protocol.model.explore.mutants import MutationScore, Verdict, mutation_score
from dynamo_backend_protocol.reference.cli.support import Subparsers, emit


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "mutate",
        help="plant every single change in the request table and count what check alone catches",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--killed", action="store_true", help="also list each killed mutant with the rules it broke")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    score = mutation_score()
    if args.json:
        print(json.dumps(as_dict(score), indent=2))
    else:
        emit(render(score, args.killed))
    return 0 if not score.blind_spots else 1


def as_dict(score: MutationScore) -> dict[str, object]:
    return {
        "mutants": len(score.verdicts),
        "killed": len(score.killed),
        "equivalent": len(score.equivalent),
        "blind_spots": len(score.blind_spots),
        "by_kind": {
            kind: {"mutants": total, "killed": killed, "equivalent": equivalent}
            for kind, (total, killed, equivalent) in score.by_kind().items()
        },
        "survivors": [_survivor(verdict) for verdict in score.verdicts if not verdict.killed],
        "kills": [{"mutant": verdict.mutant.name, "rules": list(verdict.killed_by)} for verdict in score.killed],
    }


def _survivor(verdict: Verdict) -> dict[str, object]:
    return {
        "mutant": verdict.mutant.name,
        "kind": verdict.mutant.kind,
        "equivalent": verdict.equivalent,
        "state_pairs_compared": verdict.pairs_compared,
        "difference": None if verdict.difference is None else verdict.difference.describe(),
    }


def render(score: MutationScore, list_killed: bool = False) -> str:
    lines = [
        f"{len(score.verdicts)} mutants of the request table; check alone kills {len(score.killed)}; "
        f"{len(score.equivalent)} survivors shown equivalent; {len(score.blind_spots)} blind spots",
        f"  {'kind':<18} {'mutants':>7} {'killed':>7} {'equivalent':>10}",
    ]
    for kind, (total, killed, equivalent) in score.by_kind().items():
        lines.append(f"  {kind:<18} {total:>7} {killed:>7} {equivalent:>10}")
    if score.equivalent:
        lines.append(
            "equivalent survivors (the same refusals and actions as the shipped table "
            "on every pair of states both reach, every mode):"
        )
        lines.extend(f"  {verdict.mutant.name}" for verdict in score.equivalent)
    if score.blind_spots:
        lines.append("BLIND SPOTS (survivors that some run tells apart from the shipped table):")
        for verdict in score.blind_spots:
            assert verdict.difference is not None
            lines.append(f"  {verdict.mutant.name}")
            lines.append(f"      {verdict.difference.describe()}")
    if list_killed:
        lines.append("killed:")
        lines.extend(f"  {verdict.mutant.name}: {', '.join(verdict.killed_by)}" for verdict in score.killed)
    return "\n".join(lines)
