"""``bench``: measure the adapter against the bare engine, a cancellation storm,
exploration and conformance, side by side on this machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

from dynamo_backend_protocol.reference.bench import BenchReport, run_bench
from dynamo_backend_protocol.reference.cli.support import Subparsers
from dynamo_backend_protocol.reference.conformance import run_conformance
from dynamo_backend_protocol.reference.conformance.sample_engine import SampleEngine

TARGETS = (
    ("adapter_chunks_per_s", ">=", 1_000_000),
    ("ratio_trivial", "<=", 4.0),
    ("ratio_yielding", "<=", 1.15),
    ("storm.seconds", "<=", 3.0),
    ("storm.leaked_tasks", "<=", 0),
    ("storm.abort_mismatches", "<=", 0),
    ("storm.violations", "<=", 0),
    ("storm.bytes_per_request", "<=", 2048),
    ("explore_seconds", "<", 0.5),
    ("conformance_seconds", "<", 5.0),
)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure the adapter's cost and the storm, exploration, conformance")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a first look")
    parser.set_defaults(run=run)


async def _conformance_seconds() -> float:
    started = time.perf_counter()
    await run_conformance(SampleEngine)
    return time.perf_counter() - started


def _value(figures: dict[str, object], dotted: str) -> float | None:
    value: object = figures
    for part in dotted.split("."):
        assert isinstance(value, dict)
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def target_results(report: BenchReport) -> list[tuple[str, str, float, float | None, bool]]:
    figures = report.as_dict()
    results = []
    for name, relation, bound in TARGETS:
        value = _value(figures, name)
        met = value is not None and (
            value >= bound if relation == ">=" else value <= bound if relation == "<=" else value < bound
        )
        results.append((name, relation, float(bound), value, met))
    return results


def run(args: argparse.Namespace) -> int:
    report = asyncio.run(run_bench(quick=args.quick, conformance=_conformance_seconds))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    for name, relation, bound, value, met in target_results(report):
        shown = "n/a" if value is None else f"{value:,.4g}"
        print(f"  {'met ' if met else 'MISS'} {name:<26} {shown:>14}   target {relation} {bound:,.4g}")
    figures = report.as_dict()
    print(f"  floor (one pass-through layer, no checks): ratio_trivial {figures['floor_ratio_trivial']}, "
          f"ratio_yielding {figures['floor_ratio_yielding']}")
    print(f"  bare {figures['bare_chunks_per_s']:,} chunks/s; yielding engine bare "
          f"{figures['bare_yielding_chunks_per_s']:,}, adapter {figures['adapter_yielding_chunks_per_s']:,} chunks/s")
    return 0
