"""``explain``: narrate a canonical scenario or any event sequence, step by step."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from dynamo_backend_protocol.model import Event, Mode, UnknownEvent, parse_event
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.teach.composed_events import (
    BadComposedEvent,
    parse_disagg_event,
    parse_engine_event,
)
from dynamo_backend_protocol.model.teach.composed_run import tell, unmet
from dynamo_backend_protocol.model.teach.composed_scenarios import (
    COMPOSED_SCENARIOS,
    ComposedScenario,
    Machine,
    composed_scenario,
    expected_text,
)
from dynamo_backend_protocol.model.teach.diagram_plan import Highlight, plan_request_diagram
from dynamo_backend_protocol.model.teach.narrate import Narration, narrate
from dynamo_backend_protocol.model.teach.narrate_disagg import narrate_disagg
from dynamo_backend_protocol.model.teach.narrate_engine import narrate_engine
from dynamo_backend_protocol.model.teach.narrate_raw import UnknownRawEvent, narrate_raw, parse_raw_events
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS, Scenario, UnknownScenario, scenario
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_modes,
    request_count,
)
from dynamo_backend_protocol.reference.diagrams import (
    FORMATS,
    DotNotInstalled,
    Format,
    RenderError,
    dot_available,
    dot_source,
    render,
)

_WIDTH = 100
T = TypeVar("T")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="narrate a protocol scenario or an event sequence step by step",
        description=(
            "Tell, step by step, what the protocol does with a canonical scenario (see --list) or with "
            "any event sequence (--events setup,token_chunk,terminal:stop): the event, the state before "
            "and after, the adapter's actions and the rules that decided it. With --machine disagg a decode "
            "request with its KV transfer (events: the request's and transfer_started, transfer_completed, "
            "transfer_failed); with --requests N, N requests on one engine (events: rK:EVENT for request K, "
            "engine:EVENT for start_called, start_ok, start_raised, drain, cleanup_called, cleanup_ok, "
            "cleanup_raised)."
        ),
    )
    parser.add_argument("scenario", nargs="?", metavar="SCENARIO", help="a scenario name from --list")
    parser.add_argument("--list", action="store_true", help="list the canonical scenarios")
    parser.add_argument("--events", metavar="E1,E2,...", help="narrate this comma-separated event sequence")
    add_mode_option(parser, allow_all=True, default=None)
    parser.add_argument(
        "--machine",
        choices=("request", "disagg", "raw"),
        default=None,
        help="request: one request (default); disagg: a decode request with its prefill peer's KV transfer; "
             "raw: the raw engine adapter, with --events (setup, setup_failed, object, error, end, stop, kill, drop)",
    )
    parser.add_argument(
        "--requests",
        type=request_count,
        metavar="N",
        help="N requests sharing one engine with its lifecycle (events rK:EVENT and engine:EVENT)",
    )
    parser.add_argument("--frames", metavar="DIR", help="also write one diagram per step into DIR")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="format of the --frames diagrams (default: svg)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    chosen = [name for name, given in (("--list", args.list), ("SCENARIO", args.scenario is not None),
                                       ("--events", args.events is not None)) if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of SCENARIO, --list or --events (see explain --help)")
    if args.machine == "raw":
        return run_raw(args)
    if args.machine == "disagg" and args.requests is not None:
        raise UsageError("--requests composes requests on one engine; it does not take --machine disagg")
    mode_filter = None if args.mode is None else parse_modes(args.mode)
    if args.list:
        if args.frames is not None or args.format is not None:
            raise UsageError("--frames and --format draw narrated steps; --list narrates nothing")
        print(list_all(args, mode_filter))
        return 0
    composed = None if args.scenario is None else composed_scenario(args.scenario)
    if args.scenario is not None and composed is None and (args.machine is not None or args.requests is not None):
        find_scenario(args.scenario)
        raise UsageError(f"scenario {args.scenario!r} tells one request: drop --machine and --requests")
    if composed is not None or args.machine == "disagg" or args.requests is not None:
        if args.frames is not None or args.format is not None:
            raise UsageError("--frames draws one request's diagram; composed narrations have no frames")
        return run_composed(args, composed)
    if args.format is not None and args.frames is None:
        raise UsageError("--format is the format of the --frames diagrams: give --frames DIR too")
    fmt: Format = "svg" if args.format is None else args.format
    if args.frames is not None and fmt != "dot" and not dot_available():
        raise UsageError(str(DotNotInstalled(fmt)))
    if args.events is not None:
        events = parse_events(args.events)
        modes = [Mode.AGGREGATED] if mode_filter is None else mode_filter
        label, header = "events", ""
    else:
        found = find_scenario(args.scenario)
        modes = scenario_modes(found, args.mode)
        events = list(found.parsed_events())
        label, header = found.name, scenario_header(found)
    frames = None if args.frames is None else frames_directory(Path(args.frames))
    if header:
        print(header)
    for mode in modes:
        told = narrate(events, mode)
        print()
        print(told.text())
        if frames is not None:
            write_frames(told, frames, f"{label}-{mode.value}", fmt)
    return 0


def run_raw(args: argparse.Namespace) -> int:
    """--machine raw: narrate an event sequence through the raw engine adapter's machine."""
    if args.events is None or args.scenario is not None or args.list:
        raise UsageError("--machine raw narrates --events (e.g. setup,object,stop,end); it has no scenarios")
    if args.mode is not None or args.requests is not None or args.frames is not None or args.format is not None:
        raise UsageError("--machine raw takes only --events: the raw adapter is the same in every mode")
    try:
        events = parse_raw_events(args.events)
    except UnknownRawEvent as error:
        raise UsageError(str(error)) from None
    print(narrate_raw(events))
    return 0


def frames_directory(directory: Path) -> Path:
    """Made (or checked) before any narration, so a bad path costs the user nothing."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--frames {directory}: exists and is not a directory") from None
    except OSError as error:
        raise UsageError(f"--frames {directory}: cannot create it: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--frames {directory}: not writable")
    return directory


def list_all(args: argparse.Namespace, modes: list[Mode] | None) -> str:
    """Bare --list: the one-request scenarios, then the composed ones; --mode keeps the
    one-request ones of that mode; --machine or --requests picks one machine's."""
    if args.machine == "request":
        return list_scenarios(modes)
    if args.machine == "disagg" or args.requests is not None:
        return list_composed(_composed_for(args.machine, args.requests))
    if modes is not None:
        return list_scenarios(modes)
    header = "Composed models (--list --machine disagg, --list --requests N):"
    return f"{list_scenarios()}\n\n{header}\n{list_composed(COMPOSED_SCENARIOS)}"


def _composed_for(machine: str | None, requests: int | None) -> list[ComposedScenario]:
    if machine == "disagg":
        return [item for item in COMPOSED_SCENARIOS if item.machine is Machine.DISAGG]
    engines = [item for item in COMPOSED_SCENARIOS if item.machine is Machine.ENGINE]
    shown = [item for item in engines if item.requests == requests]
    if not shown:
        counts = ", ".join(sorted({str(item.requests) for item in engines}))
        raise UsageError(f"--requests {requests}: no engine scenario has {requests} requests; they have {counts}")
    return shown


def list_composed(shown: Sequence[ComposedScenario]) -> str:
    width = max(len(item.name) for item in COMPOSED_SCENARIOS)
    return "\n".join(f"{item.name:<{width}}  {item.title}  [{item.where()}]" for item in shown)


def run_composed(args: argparse.Namespace, found: ComposedScenario | None) -> int:
    """A composed scenario, or --events with --machine disagg or --requests N."""
    if found is not None:
        _check_scenario_options(args, found)
        told = tell(found)
        print(composed_header(found))
        print()
        print(told.text())
        differences = unmet(found, told)
        if differences:
            print(f"This differs from the scenario's expected end: {'; '.join(differences)}.")
        else:
            print("This is the scenario's expected end.")
        return 0
    if args.machine == "disagg":
        if args.mode is not None and parse_modes(args.mode) != [Mode.DECODE]:
            raise UsageError("--machine disagg is a decode request with its KV transfer; use --mode decode")
        events = _parse_each(args.events, parse_disagg_event, "setup,transfer_started,stop")
        print()
        print(narrate_disagg(events).text())
        return 0
    modes = [Mode.AGGREGATED] if args.mode is None else parse_modes(args.mode)
    count: int = args.requests
    moves = _parse_each(args.events, lambda token: parse_engine_event(token, count), "r1:setup,engine:drain")
    for mode in modes:
        print()
        print(narrate_engine(moves, Composition(args.requests, mode)).text())
    return 0


def _check_scenario_options(args: argparse.Namespace, found: ComposedScenario) -> None:
    if args.machine is not None or args.requests is not None:
        where = found.where()
        raise UsageError(f"scenario {found.name!r} names its composition ({where}): drop --machine and --requests")
    if args.mode is not None and parse_modes(args.mode) != [found.mode]:
        raise UsageError(f"scenario {found.name!r} is told in mode {found.mode.value} only")


def _parse_each(text: str, parse: Callable[[str], T], example: str) -> list[T]:
    """The --events items parsed in order; a bad one is reported with its position."""
    tokens = [token.strip() for token in text.split(",")]
    if not any(tokens):
        raise UsageError(f"--events needs at least one event, e.g. --events {example}")
    parsed: list[T] = []
    for position, token in enumerate(tokens, start=1):
        if not token:
            raise UsageError(f"--events item {position}: empty")
        try:
            parsed.append(parse(token))
        except (UnknownEvent, BadComposedEvent) as bad:
            raise UsageError(f"--events item {position}: {bad}") from None
    return parsed


def composed_header(found: ComposedScenario) -> str:
    body = textwrap.fill(found.description, width=_WIDTH)
    return "\n".join((f"Scenario {found.name}: {found.title}", body, f"Composition: {found.where()}.",
                      f"Expected end: {expected_text(found)}"))


def list_scenarios(modes: list[Mode] | None = None) -> str:
    """Every scenario, or those that apply in one of ``modes``."""
    shown = [item for item in SCENARIOS if modes is None or any(item.applies_to(mode) for mode in modes)]
    width = max(len(s.name) for s in SCENARIOS)
    lines = []
    for item in shown:
        applies = ", ".join(mode.value for mode in item.modes)
        lines.append(f"{item.name:<{width}}  {item.title}  [{applies}]")
    return "\n".join(lines)


def find_scenario(name: str) -> Scenario:
    try:
        return scenario(name)
    except UnknownScenario as unknown:
        composed = ", ".join(item.name for item in COMPOSED_SCENARIOS)
        raise UsageError(f"{unknown}; composed scenarios: {composed}") from None


def scenario_modes(found: Scenario, mode_text: str | None) -> list[Mode]:
    """The modes to narrate in: the scenario's first mode by default, each
    applicable one for ``all``; a mode it does not apply to is refused."""
    if mode_text is None:
        return [found.modes[0]]
    if mode_text.strip().lower() == "all":
        return list(found.modes)
    [mode] = parse_modes(mode_text)
    if not found.applies_to(mode):
        applies = ", ".join(m.value for m in found.modes)
        raise UsageError(
            f"scenario {found.name!r} does not apply in mode {mode.value}; it applies in: {applies}. "
            f"{found.not_applicable}".strip()
        )
    return [mode]


def parse_events(text: str) -> list[Event]:
    return _parse_each(text, parse_event, "setup,token_chunk,terminal:stop")


def scenario_header(found: Scenario) -> str:
    modes = ", ".join(mode.value for mode in found.modes)
    body = textwrap.fill(found.description, width=_WIDTH)
    return f"Scenario {found.name}: {found.title}\n{body}\nApplies in: {modes}."


def write_frames(told: Narration, directory: Path, stem: str, fmt: Format) -> list[Path]:
    """Frame 0 is the start; frame n shows step n's target state and fired edge
    (a forbidden step lights only the state the request stays in)."""
    highlights: list[tuple[str, Highlight]] = [(f"{stem}: start", Highlight(state=told.initial.control))]
    for step in told.steps:
        caption = f"{stem}: step {step.number}, {step.event.name}" + (" (not allowed)" if step.forbidden else "")
        highlights.append((caption, Highlight(state=step.after.control, row=step.row, source=step.before.control)))
    written: list[Path] = []
    for number, (caption, highlight) in enumerate(highlights):
        path = directory / f"{stem}-{number:02d}.{fmt}"
        plan = replace(plan_request_diagram(told.mode, highlight), title=caption)
        try:
            path.write_bytes(render(dot_source(plan), fmt))
        except RenderError as failed:
            raise UsageError(str(failed)) from None
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
        written.append(path)
    print(f"wrote {len(written)} frame(s) to {directory}/{stem}-NN.{fmt}")
    return written
