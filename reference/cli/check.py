"""``check``: explore the request machine and the engine lifecycle exhaustively and report every invariant
and every liveness property, with the fairness each one needs."""

from __future__ import annotations

import argparse
import json
import resource
from collections.abc import Callable, Sequence

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.disagg import DISAGG_FAIRNESS
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore import ExplorationReport, InvariantResult, explore_all
from dynamo_backend_protocol.model.explore.checking import MachineReport
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.explore.disagg import DisaggReport, explore_disagg
from dynamo_backend_protocol.model.explore.engine import LIVENESS_MAX_REQUESTS, explore_engine
from dynamo_backend_protocol.model.explore.lifecycle import LifecycleReport, explore_lifecycle
from dynamo_backend_protocol.model.explore.liveness import LivenessResult
from dynamo_backend_protocol.model.explore.raw_engine import explore_raw
from dynamo_backend_protocol.model.liveness import FAIRNESS
from dynamo_backend_protocol.model.raw_engine import RAW_STATE_INVARIANTS, RAW_STEP_INVARIANTS
from dynamo_backend_protocol.model.releases import holds_text
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    emit,
    parse_modes,
    request_count,
)
from dynamo_backend_protocol.reference.spin import (
    SpinUnavailable,
    SpinVerdict,
    spin_check,
    spin_check_engine,
    spin_check_raw,
)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("check", help="explore the protocol model and check every invariant")
    add_mode_option(parser, allow_all=True, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--machine",
        choices=("request", "disagg", "raw"),
        default="request",
        help="request: one request per mode and the engine lifecycle; disagg: a decode request with its KV transfer; "
             "raw: the raw engine adapter (from Dynamo 1.3.1)",
    )
    parser.add_argument(
        "--checker",
        dest="engine",
        choices=("explorer", "spin"),
        default="explorer",
        help="explorer: this package's own; spin: SPIN on the Promela export (invariants and liveness)",
    )
    # The checker's earlier name, kept for scripts; --engine names the engine under test elsewhere.
    parser.add_argument("--engine", dest="engine", choices=("explorer", "spin"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--requests",
        type=request_count,
        metavar="N",
        help="N concurrent requests of the mode sharing one engine, composed with the engine lifecycle",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="with --requests: also time the generic explorer on the same composition (at most 2 requests)",
    )
    parser.set_defaults(run=run)




def run(args: argparse.Namespace) -> int:
    modes = parse_modes(args.mode)
    if args.baseline and args.requests is None:
        raise UsageError("check: --baseline times the composed model; give --requests N")
    if args.requests is not None:
        if args.machine != "request":
            raise UsageError("check: --requests composes request machines; it does not take --machine disagg")
        if args.engine == "spin":
            if args.baseline:
                raise UsageError("check: --baseline times this package's explorers, not SPIN")
            return _run_spin_requests(modes, args.requests, args.json)
        return _run_requests(modes, args.requests, args.json, args.baseline)
    if args.machine == "raw":
        if args.mode is not None:
            raise UsageError("check: --machine raw is one machine for every mode; drop --mode")
        if args.engine == "spin":
            return _run_spin_raw(args.json)
        return _run_raw(args.json)
    if args.machine == "disagg":
        if args.mode is not None and modes != [Mode.DECODE]:
            raise UsageError("check: --machine disagg is a decode request with its KV transfer; use --mode decode")
        if args.engine == "spin":
            return _run_spin([Mode.DECODE], args.json, with_transfer=True)
        return _run_disagg(args.json)
    if args.engine == "spin":
        return _run_spin(modes, args.json)
    report = explore_all(modes)
    # The lifecycle does not depend on the mode, so it is checked whatever --mode says.
    lifecycle = explore_lifecycle()
    ok = report.ok and lifecycle.ok
    if args.json:
        print(json.dumps(as_dict(report, lifecycle), indent=2))
    else:
        emit(render(report, lifecycle))
    return 0 if ok else 1


def _run_spin(modes: list[Mode], as_json: bool, with_transfer: bool = False) -> int:
    what = "a decode request and its KV transfer" if with_transfer else "mode {mode}"
    return _report_spin(modes, as_json, lambda mode: spin_check(mode, with_transfer=with_transfer),
                        what=what, not_checked=SPIN_CANNOT_CHECK)


def _run_spin_requests(modes: list[Mode], count: int, as_json: bool) -> int:
    not_checked = SPIN_CANNOT_CHECK_ENGINE
    if count > LIVENESS_MAX_REQUESTS:
        not_checked += f"; the liveness rules beyond {LIVENESS_MAX_REQUESTS} requests (too slow)"
    return _report_spin(modes, as_json, lambda mode: spin_check_engine(Composition(count, mode)),
                        what=f"{count} {{mode}} request(s) sharing one engine",
                        not_checked=not_checked,
                        extra={"requests": count})


def _report_spin(
    modes: list[Mode],
    as_json: bool,
    verify: Callable[[Mode], Sequence[SpinVerdict]],
    *,
    what: str,
    not_checked: str,
    extra: dict[str, object] | None = None,
) -> int:
    """SPIN's verdicts per mode, as a table or JSON; ``what`` names the model, ``{mode}`` filled in."""
    try:
        verdicts = {mode: verify(mode) for mode in modes}
    except SpinUnavailable as error:
        raise UsageError(f"check: {error}") from None
    ok = all(verdict.holds for found in verdicts.values() for verdict in found)
    if as_json:
        data: dict[str, object] = {
            "ok": ok,
            "engine": "spin",
            **(extra or {}),
            "modes": {
                mode.value: [{"id": v.rule, "name": v.name, "holds": v.holds} for v in found]
                for mode, found in verdicts.items()
            },
        }
        data["not_checked"] = not_checked
        print(json.dumps(data, indent=2))
        return 0 if ok else 1
    lines: list[str] = []
    for mode, found in verdicts.items():
        lines.append(f"{what.format(mode=mode.value)} (SPIN on the Promela export):")
        lines.extend(f"  {'holds   ' if v.holds else 'VIOLATED'} {v.rule:<34} {v.name}" for v in found)
    lines.append(f"not checked by SPIN: {not_checked}")
    lines.append(f"{'all properties hold' if ok else 'PROPERTIES VIOLATED'} in {len(modes)} mode(s), according to SPIN")
    emit("\n".join(lines))
    return 0 if ok else 1


SPIN_CANNOT_CHECK = (
    "TABLE-WELL-FORMED (to SPIN two rows for one step are a choice, not a fault) and DONE-REACHABLE "
    "(from every state some run ends: branching time, which LTL cannot state); the engine lifecycle alone "
    "is checked by SPIN inside --requests N"
)
SPIN_CANNOT_CHECK_ENGINE = (
    "TABLE-WELL-FORMED and cleanup_reachable_from_every_state (branching time, which LTL cannot state)"
)


def _run_raw(as_json: bool) -> int:
    """The raw adapter's machine: every invariant, and the release its rule holds from."""
    found = explore_raw()
    failed = {(rule, name) for rule, name, _ in found.failures}
    invariants = [(inv.rule, inv.name) for inv in RAW_STATE_INVARIANTS]
    invariants += [(inv.rule, inv.name) for inv in RAW_STEP_INVARIANTS]
    ok = not failed and found.done_reachable
    if as_json:
        print(json.dumps({
            "ok": ok, "machine": "raw", "states": found.states, "steps": found.steps,
            "invariants": [{"id": rule, "name": name, "holds": (rule, name) not in failed, "since": holds_text(rule)}
                           for rule, name in invariants],
            "done_reachable": found.done_reachable,
            "failures": [{"id": rule, "name": name, "path": [ev.value for ev in path]}
                         for rule, name, path in found.failures],
        }, indent=2))
        return 0 if ok else 1
    lines = [f"raw engine adapter: {found.states} states, {found.steps} steps"]
    for rule, name in invariants:
        word = "VIOLATED" if (rule, name) in failed else "holds   "
        lines.append(f"  {word} {rule:<22} {name:<40} ({holds_text(rule)})")
    for _, name, path in found.failures:
        lines.append(f"    {name} fails after: {', '.join(ev.value for ev in path)}")
    lines.append(f"  {'holds   ' if found.done_reachable else 'VIOLATED'} Done is reachable from every state")
    lines.append("all invariants hold" if ok else "INVARIANTS VIOLATED")
    print("\n".join(lines))
    return 0 if ok else 1


def _run_spin_raw(as_json: bool) -> int:
    try:
        verdicts = spin_check_raw()
    except SpinUnavailable as error:
        raise UsageError(f"check: {error}") from None
    ok = all(verdict.holds for verdict in verdicts)
    if as_json:
        print(json.dumps({"ok": ok, "engine": "spin", "machine": "raw",
                          "invariants": [{"id": v.rule, "name": v.name, "holds": v.holds,
                                          "since": holds_text(v.rule)} for v in verdicts],
                          "not_checked": SPIN_CANNOT_CHECK_RAW}, indent=2))
        return 0 if ok else 1
    lines = ["the raw engine adapter (SPIN on the Promela export):"]
    lines += [f"  {'holds   ' if v.holds else 'VIOLATED'} {v.rule:<22} {v.name:<40} ({holds_text(v.rule)})"
              for v in verdicts]
    lines.append(f"not checked by SPIN: {SPIN_CANNOT_CHECK_RAW}")
    lines.append("all properties hold, according to SPIN" if ok else "PROPERTIES VIOLATED, according to SPIN")
    print("\n".join(lines))
    return 0 if ok else 1


SPIN_CANNOT_CHECK_RAW = "that Done is reachable from every state (branching time, which LTL cannot state)"


def _run_disagg(as_json: bool) -> int:
    report = explore_disagg()
    if as_json:
        print(json.dumps({"ok": report.ok, "disagg": report.as_dict()}, indent=2))
    else:
        emit(render_disagg(report))
    return 0 if report.ok else 1


def _run_requests(modes: list[Mode], count: int, as_json: bool, baseline: bool) -> int:
    reports = {mode: explore_compiled(Composition(count, mode)) for mode in modes}
    peak = peak_memory_mib()
    # The compiled explorer merges interchangeable requests, so it cannot follow one request round
    # a loop; liveness is checked on the generic walk's graph, which is small enough up to this size.
    liveness = (
        {mode: explore_engine(Composition(count, mode), liveness=True).liveness for mode in modes}
        if count <= LIVENESS_MAX_REQUESTS
        else {}
    )
    baselines = {mode: explore_engine(Composition(min(count, 2), mode)) for mode in modes} if baseline else {}
    ok = all(report.ok for report in reports.values()) and all(
        result.holds for found in liveness.values() for result in found
    )
    if as_json:
        data: dict[str, object] = {
            "ok": ok,
            "requests": count,
            "peak_memory_mib": round(peak, 1),
            "modes": {
                mode.value: {**report.as_dict(), "liveness": [result.as_dict() for result in liveness.get(mode, [])]}
                for mode, report in reports.items()
            },
        }
        if not liveness:
            data["liveness_not_checked"] = f"liveness is checked up to {LIVENESS_MAX_REQUESTS} requests"
        if baselines:
            data["baseline"] = {mode.value: _baseline_dict(found) for mode, found in baselines.items()}
        print(json.dumps(data, indent=2))
        return 0 if ok else 1
    lines: list[str] = []
    for mode, report in reports.items():
        lines.append(
            f"{count} {mode.value} request(s) sharing one engine, with its lifecycle (symmetry-reduced): "
            f"{report.states} states, {report.transitions} transitions, {report.seconds:.2f} s, "
            f"{report.states / report.seconds:,.0f} states/s, {1e6 * report.seconds / report.states:.1f} us/state"
        )
        lines.extend(_invariant_lines(report.invariants))
        lines.extend(_liveness_lines(liveness.get(mode, [])))
        if mode in baselines:
            old = baselines[mode]
            lines.append(
                f"  baseline: the generic explorer on {min(count, 2)} request(s), no symmetry: {old.states} states "
                f"in {old.seconds:.2f} s, {1e6 * old.seconds / old.states:.1f} us/state "
                f"({old.seconds / old.states / (report.seconds / report.states):.0f}x the compiled cost per state)"
            )
    lines.append(f"peak memory: {peak:.0f} MiB")
    if not liveness:
        lines.append(f"liveness not checked: beyond {LIVENESS_MAX_REQUESTS} requests (the walk it needs is too slow)")
    lines.append(
        f"{'all properties hold' if ok else 'PROPERTIES VIOLATED'} with {count} concurrent request(s) "
        f"in {len(modes)} mode(s)"
    )
    emit("\n".join(lines))
    return 0 if ok else 1


def _baseline_dict(report: MachineReport) -> dict[str, object]:
    return {
        "states": report.states,
        "transitions": report.transitions,
        "seconds": round(report.seconds, 6),
        "us_per_state": round(1e6 * report.seconds / report.states, 2),
    }


def peak_memory_mib() -> float:
    """This process's peak resident memory so far (Linux reports it in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render_disagg(report: DisaggReport) -> str:
    lines = [
        f"disagg (a decode request and its prefill peer's KV transfer): {report.states} states, "
        f"{report.transitions} transitions, {report.seconds * 1000:.1f} ms",
        *_invariant_lines(report.invariants),
        *_liveness_lines(report.liveness),
        "fairness the composition's liveness rules assume beyond the request's:",
        *(f"  {fairness.name:<28} {fairness.assumes}" for fairness in DISAGG_FAIRNESS),
        "all properties hold in the composition" if report.ok else "PROPERTIES VIOLATED in the composition",
    ]
    return "\n".join(lines)


def as_dict(report: ExplorationReport, lifecycle: LifecycleReport) -> dict[str, object]:
    """The request machine's report, with ``ok`` covering the lifecycle too, a ``lifecycle`` key added,
    and ``fairness``: what each fairness assumption the liveness rules name assumes."""
    data = report.as_dict()
    data["ok"] = report.ok and lifecycle.ok
    data["lifecycle"] = lifecycle.as_dict()
    data["fairness"] = {fairness.name: fairness.assumes for fairness in FAIRNESS}
    return data


def render(report: ExplorationReport, lifecycle: LifecycleReport | None = None) -> str:
    lines: list[str] = []
    for mode, mode_report in report.modes.items():
        lines.append(
            f"mode {mode.value}: {mode_report.states} states, {mode_report.transitions} transitions, "
            f"{mode_report.seconds * 1000:.1f} ms"
        )
        lines.extend(_invariant_lines(mode_report.invariants))
        lines.extend(_liveness_lines(mode_report.liveness))
    ok = report.ok
    scope = f"{len(report.modes)} mode(s)"
    if lifecycle is not None:
        lines.append(
            f"engine lifecycle: {lifecycle.states} states, {lifecycle.transitions} transitions, "
            f"{lifecycle.seconds * 1000:.1f} ms"
        )
        lines.extend(_invariant_lines(lifecycle.invariants))
        ok = ok and lifecycle.ok
        scope += " and the engine lifecycle"
    lines.append("fairness the liveness rules assume (weak: an event of the class that stays allowed happens):")
    lines.extend(f"  {fairness.name:<20} {fairness.assumes}" for fairness in FAIRNESS)
    verdict = "all invariants hold, and every liveness rule under its fairness," if ok else "INVARIANTS VIOLATED"
    lines.append(f"{verdict} in {scope}")
    return "\n".join(lines)


def _invariant_lines(results: list[InvariantResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        mark = "holds   " if result.holds else "VIOLATED"
        lines.append(f"  {mark} {result.rule:<34} {result.name}")
        if not result.holds:
            lines.append(f"           counterexample: {' -> '.join(result.counterexample or [])}")
            if result.detail:
                lines.append(f"           {result.detail}")
    return lines


def _liveness_lines(results: list[LivenessResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        mark = "holds   " if result.holds else "VIOLATED"
        lines.append(f"  {mark} {result.rule:<34} {result.name} (liveness)")
        lines.append(f"           assumes fairness: {', '.join(result.fairness) or 'none'}")
        if result.counterexample is not None:
            lines.append(f"           fair lasso: {result.counterexample.describe()}")
        elif not result.triggered:
            lines.append("           holds without fairness: no reachable state triggers it")
        elif result.without_fairness is None:
            lines.append("           holds without fairness")
        else:
            lines.append(f"           needs: {', '.join(result.needs) or 'some of them together'}")
            for name, lasso in result.without.items():
                lines.append(f"           without {name}: {lasso.describe()}")
    return lines
