"""``check``: explore the request machine and the engine lifecycle exhaustively and report every invariant
and every liveness property, with the fairness each one needs."""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.disagg import DISAGG_FAIRNESS
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore import ExplorationReport, InvariantResult, explore_all
from dynamo_backend_protocol.model.explore.checking import MachineReport
from dynamo_backend_protocol.model.explore.compiled import (
    BoundReached,
    CompiledReport,
    ExplorationBounds,
    explore_compiled,
)
from dynamo_backend_protocol.model.explore.compiled_liveness import UnsupportedLiveness, check_compiled_liveness
from dynamo_backend_protocol.model.explore.disagg import DisaggReport, explore_disagg
from dynamo_backend_protocol.model.explore.engine import LIVENESS_MAX_REQUESTS, explore_engine
from dynamo_backend_protocol.model.explore.lifecycle import LifecycleReport, explore_lifecycle
from dynamo_backend_protocol.model.explore.liveness import LivenessResult
from dynamo_backend_protocol.model.explore.raw_engine import explore_raw
from dynamo_backend_protocol.model.liveness import FAIRNESS
from dynamo_backend_protocol.model.raw_engine import RAW_STATE_INVARIANTS, RAW_STEP_INVARIANTS
from dynamo_backend_protocol.model.releases import holds_text
from dynamo_backend_protocol.reference.bench.memory import rss_bytes
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    emit,
    parse_modes,
    request_count,
)
from dynamo_backend_protocol.reference.spin import (
    SEARCHES,
    SearchReport,
    SpinUnavailable,
    SpinVerdict,
    VerifierRun,
    spin_check,
    spin_check_engine,
    spin_check_raw,
    spin_search,
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
    add_bound_options(parser)
    parser.add_argument(
        "--search",
        choices=("exact", *SEARCHES),
        default="exact",
        help="with --checker spin --requests: SPIN's exact search, its bitstate hashing, or hash compaction "
        "(approximate, for compositions too large to store; the verdict says how much it covered)",
    )
    parser.add_argument(
        "--swarm",
        type=_verifier_count,
        nargs="?",
        const=DEFAULT_SWARM,
        metavar="N",
        help=f"with --checker spin --requests: a swarm of N bitstate verifiers, each with its own seed, hash "
        f"functions and search order (default {DEFAULT_SWARM}; as many run at once as there are cores)",
    )
    parser.add_argument(
        "--time-limit",
        type=_minutes,
        default=DEFAULT_MINUTES,
        metavar="MINUTES",
        help=f"with --search or --swarm: each verifier's time on the wall clock, in whole minutes; at the limit it "
        f"reports what it searched so far (default {DEFAULT_MINUTES})",
    )
    parser.set_defaults(run=run)


DEFAULT_SWARM = 4
DEFAULT_MINUTES = 2


def _verifier_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"between 1 and 64 verifiers, not {count}")
    return count


def _minutes(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"whole minutes, not {text!r}") from None
    if not 1 <= minutes <= 24 * 60:
        raise argparse.ArgumentTypeError(f"between 1 and 1440 minutes, not {minutes}")
    return minutes


def run(args: argparse.Namespace) -> int:
    modes = parse_modes(args.mode)
    approximate = args.swarm is not None or args.search != "exact"
    if approximate and (args.engine != "spin" or args.requests is None):
        raise UsageError(
            "check: --search and --swarm are SPIN's searches of a composition; give --checker spin --requests N"
        )
    if args.swarm is not None and args.search == "hashcompact":
        raise UsageError("check: a swarm is of bitstate verifiers; leave out --search hashcompact")
    if args.baseline and args.requests is None:
        raise UsageError("check: --baseline times the composed model; give --requests N")
    if args.requests is not None:
        if args.machine != "request":
            raise UsageError("check: --requests composes request machines; it does not take --machine disagg")
        if args.engine == "spin":
            if args.baseline:
                raise UsageError("check: --baseline times this package's explorers, not SPIN")
            if approximate:
                return _run_spin_search(modes, args)
            return _run_spin_requests(modes, args.requests, args.json)
        return _run_requests(modes, args.requests, args.json, args.baseline, args)
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


def _run_spin_search(modes: list[Mode], args: argparse.Namespace) -> int:
    """SPIN's bitstate or hash-compact search (one verifier, or a swarm) of the composition's invariants."""
    count, verifiers = args.requests, args.swarm or 1
    search = "bitstate" if args.swarm is not None else args.search
    memory = args.max_memory if args.max_memory is not None else min(SPIN_MEMORY, default_max_memory())
    try:
        reports = {
            mode: spin_search(Composition(count, mode), search=search, verifiers=verifiers, memory=memory,
                              minutes=args.time_limit)
            for mode in modes
        }
    except SpinUnavailable as error:
        raise UsageError(f"check: {error}") from None
    ok = not any(report.violated for report in reports.values())
    if args.json:
        print(json.dumps({
            "ok": ok,
            "engine": "spin",
            "search": search,
            "requests": count,
            "modes": {mode.value: _search_dict(report) for mode, report in reports.items()},
            "not_checked": SPIN_SEARCH_CANNOT_CHECK,
        }, indent=2))
        return 0 if ok else 1
    kind = f"a swarm of {verifiers} bitstate verifiers" if args.swarm is not None else f"a {search} search"
    lines: list[str] = []
    for mode, report in reports.items():
        lines.append(f"{count} {mode.value} request(s) sharing one engine (SPIN, {kind}, every invariant at once):")
        for index, found in enumerate(report.runs, 1):
            lines.append(f"  verifier {index} ({' '.join(found.options[4:])}): {_run_line(found)}")
        verdict = "VIOLATED: an invariant fails (export --format promela and run SPIN for the trail)" if (
            report.violated) else "no invariant violated in any state the search reached"
        lines.append(f"  {verdict}")
        lines.append(f"  coverage: {_coverage_line(report)}")
    lines.append(f"not checked by this search: {SPIN_SEARCH_CANNOT_CHECK}")
    lines.append(
        "PROPERTIES VIOLATED, according to SPIN" if not ok
        else f"no violation found in {len(modes)} mode(s) by {kind} (SPIN)"
    )
    print("\n".join(lines))
    return 0 if ok else 1


def _run_line(found: VerifierRun) -> str:
    parts = [f"{found.stored:,} states stored", f"depth {found.depth}", f"{found.seconds:.0f} s"]
    if found.hash_factor is not None:
        parts.append(f"hash factor {found.hash_factor:,.1f} (SPIN: best if > 100)")
    if found.miss_chance is not None:
        parts.append(f"chance it took a state it met for one already seen {found.miss_chance:.1e}")
    parts.append(f"stopped: {found.truncated}" if found.truncated else "search ended")
    if found.errors:
        parts.append(f"{found.errors} error(s)")
    return ", ".join(parts)


def _coverage_line(report: SearchReport) -> str:
    if report.miss_chance is None:
        coverage = (
            f"at most {report.stored:,} states stored by one verifier; SPIN gives no estimate for hash "
            "compaction, so compare that with an exact run's"
        )
    else:
        coverage = (
            f"at most {report.stored:,} states stored by one verifier; each took a state it met for one "
            f"already seen with probability at most {report.miss_chance:.1e} ((1 - e^(-k/h))^k for k hash "
            "functions and hash factor h)"
        )
    if not report.complete:
        coverage += "; some verifiers stopped before their search ended, so parts of the space were not reached"
    return coverage


def _search_dict(report: SearchReport) -> dict[str, object]:
    return {
        "violated": report.violated,
        "complete": report.complete,
        "states_stored": report.stored,
        "estimated_coverage": report.coverage,
        "miss_chance": report.miss_chance,
        "verifiers": [
            {
                "options": list(found.options),
                "errors": found.errors,
                "states_stored": found.stored,
                "depth": found.depth,
                "seconds": round(found.seconds, 3),
                "hash_factor": found.hash_factor,
                "estimated_coverage": found.coverage,
                "miss_chance": found.miss_chance,
                "stopped": found.truncated,
            }
            for found in report.runs
        ],
    }


SPIN_MEMORY = 512 * 1024**2
"""What the verifiers' hash arrays share by default: 2^31 bits each for two at once, a hash factor
past 100 up to some 20 million states (more with --max-memory)."""

SPIN_SEARCH_CANNOT_CHECK = (
    "liveness (an approximate search checks the invariants, together), TABLE-WELL-FORMED and "
    "cleanup_reachable_from_every_state"
)


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
    report = explore_raw()
    failed = [result for result in report.invariants if not result.holds]
    # Done's reachability has a line of its own; the table's soundness is listed only when it fails.
    named = {inv.name for inv in RAW_STATE_INVARIANTS} | {inv.name for inv in RAW_STEP_INVARIANTS}
    invariants = [result for result in report.invariants if result.name in named]
    if as_json:
        print(json.dumps({
            "ok": report.ok, "machine": "raw", "states": report.states, "steps": report.transitions,
            "seconds": round(report.seconds, 6),
            "invariants": [{"id": result.rule, "name": result.name, "holds": result.holds,
                            "since": holds_text(result.rule)} for result in invariants],
            "done_reachable": report.done_reachable,
            "failures": [{"id": result.rule, "name": result.name, "path": result.counterexample}
                         for result in failed],
            "liveness": [result.as_dict() for result in report.liveness],
        }, indent=2))
        return 0 if report.ok else 1
    lines = [f"raw engine adapter: {report.states} states, {report.transitions} steps"]
    for result in invariants:
        word = "holds   " if result.holds else "VIOLATED"
        lines.append(f"  {word} {result.rule:<22} {result.name:<40} ({holds_text(result.rule)})")
    for result in failed:
        lines.append(f"    {result.name} fails after: {', '.join(result.counterexample or ())}")
    lines.append(f"  {'holds   ' if report.done_reachable else 'VIOLATED'} Done is reachable from every state")
    lines.append("all invariants hold" if report.ok else "INVARIANTS VIOLATED")
    print("\n".join(lines))
    return 0 if report.ok else 1


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


def _run_requests(
    modes: list[Mode], count: int, as_json: bool, baseline: bool, args: argparse.Namespace
) -> int:
    bounds = Bounds.from_args(args)
    mode = modes[0]
    reports: dict[Mode, CompiledReport] = {}
    liveness: dict[Mode, list[LivenessResult]] = {}
    not_checked: dict[Mode, str] = {}
    try:
        for mode in modes:
            composition = Composition(count, mode)
            report = reports[mode] = explore_compiled(composition, bounds=bounds.exploration, keep_graph=True)
            assert report.graph is not None
            try:
                liveness[mode] = check_compiled_liveness(report.graph)
            except UnsupportedLiveness as reason:
                # The generic search has no precondition; it is only slow, so it runs where it is small.
                if count <= LIVENESS_MAX_REQUESTS:
                    liveness[mode] = explore_engine(composition, liveness=True).liveness
                else:
                    not_checked[mode] = str(reason)
            report.graph = None
    except BoundReached as stopped:
        bounds.done()
        raise UsageError(bounds.reached(stopped, count, mode)) from None
    except MemoryError:
        bounds.done()
        raise UsageError(
            f"check: ran out of memory with {count} {mode.value} requests; give a smaller --max-memory "
            f"(now {describe_size(bounds.max_memory)}) or use SPIN: check --checker spin --requests {count} "
            f"--mode {mode.value} --swarm"
        ) from None
    bounds.done()
    peak = peak_memory_mib()
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
        if not_checked:
            data["liveness_not_checked"] = {mode.value: reason for mode, reason in not_checked.items()}
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
        if mode in not_checked:
            lines.append(f"  liveness not checked: {not_checked[mode]}")
        if mode in baselines:
            old = baselines[mode]
            lines.append(
                f"  baseline: the generic explorer on {min(count, 2)} request(s), no symmetry: {old.states} states "
                f"in {old.seconds:.2f} s, {1e6 * old.seconds / old.states:.1f} us/state "
                f"({old.seconds / old.states / (report.seconds / report.states):.0f}x the compiled cost per state)"
            )
    lines.append(f"peak memory: {peak:.0f} MiB")
    lines.append(
        f"{'all properties hold' if ok else 'PROPERTIES VIOLATED'} with {count} concurrent request(s) "
        f"in {len(modes)} mode(s)"
    )
    emit("\n".join(lines))
    return 0 if ok else 1


GIB = 1024**3
MAX_MEMORY_CEILING = 2 * GIB
"""The default memory bound, at most: 4 decode requests take about 0.5 GiB (1,680,897 states, 456 MiB
peak), and a shared 24 GiB machine keeps room for others; about 8 million states fit."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def default_max_memory() -> int:
    """2 GiB, or less where the machine or the process's limit is smaller: a quarter of the
    machine's memory, 60% of an address-space limit (a Python process maps more than it touches)."""
    bound = MAX_MEMORY_CEILING
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
        bound = min(bound, total // 4)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            bound = min(bound, int(soft * 0.6))
    return bound


def memory_size(text: str) -> int:
    """``--max-memory``: bytes, or a number with K, M, G or T (binary units: 1G is 1 GiB)."""
    found = _SIZE.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"not a size (say 4G or 512M): {text!r}")
    number, unit = float(found.group(1)), found.group(2).lower()
    size = int(number * 1024 ** "_kmgt".index(unit)) if unit else int(number)
    if size < 64 * 1024**2:
        raise argparse.ArgumentTypeError(f"at least 64M, not {text!r}")
    return size


def state_count(text: str) -> int:
    try:
        count = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {count}")
    return count


def describe_size(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / 1024**2:.0f} MiB"


def add_bound_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-states",
        type=state_count,
        default=None,
        metavar="N",
        help="with --requests: stop (exit 2) past N stored states (default: only the memory bound)",
    )
    parser.add_argument(
        "--max-memory",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="with --requests: stop (exit 2) before the search needs more memory than SIZE, e.g. 2G "
        f"(default {describe_size(default_max_memory())} here: at most 2G, a quarter of the machine's memory); "
        "with --checker spin: what the verifiers' hash arrays share",
    )


@dataclass
class Bounds:
    """The explorer's bounds from the command line, and the live count on a terminal."""

    max_states: int | None
    max_memory: int
    show_progress: bool
    started: float = 0.0
    shown: bool = field(default=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Bounds:
        memory = args.max_memory if args.max_memory is not None else default_max_memory()
        return cls(args.max_states, memory, sys.stderr.isatty())

    @property
    def exploration(self) -> ExplorationBounds:
        return ExplorationBounds(
            self.max_states, self.max_memory, rss_bytes, self._progress if self.show_progress else None
        )

    def _progress(self, states: int) -> None:
        print(f"\rexploring: {states:,} states, {rss_bytes() / 1024**2:,.0f} MiB", end="", file=sys.stderr, flush=True)
        self.shown = True

    def done(self) -> None:
        """Clear the live count, so that what follows starts on a clean line."""
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False

    def reached(self, stopped: BoundReached, count: int, mode: Mode) -> str:
        limit = f"--max-states {self.max_states or 0:,}" if stopped.bound == "the state bound" else (
            f"--max-memory {describe_size(self.max_memory)}"
        )
        return (
            f"check: stopped at {stopped.bound} ({limit}) with {count} {mode.value} requests after "
            f"{stopped.states:,} states and {stopped.transitions:,} transitions in {stopped.seconds:.0f} s "
            f"({describe_size(stopped.memory)} in use); nothing was judged. This composition is too large to "
            f"search exactly here: use SPIN's bitstate search (check --checker spin --requests {count} "
            f"--mode {mode.value} --swarm, or export --format promela --requests {count} and a swarm on more "
            "machines: docs/model-checking.md), or raise the bound"
        )


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
