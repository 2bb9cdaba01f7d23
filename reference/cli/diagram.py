"""``diagram``: draw the protocol machine from the model's table."""

from __future__ import annotations

import argparse
import enum
import sys
from pathlib import Path
from typing import TypeVar

from dynamo_backend_protocol.model import ControlState, Mode
from dynamo_backend_protocol.model.teach.diagram_plan import DiagramPlan, Highlight, plan_request_diagram
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_mode,
    writable_file,
)
from dynamo_backend_protocol.reference.diagrams import FORMATS, Format, RenderError, dot_source, render

MACHINES = ("request", "lifecycle", "raw")
StateT = TypeVar("StateT", bound=enum.Enum)
_SUFFIX_FORMATS: dict[str, Format] = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "diagram",
        help="draw a protocol machine as a state diagram (DOT, SVG or PNG)",
        description=(
            "Draw a protocol machine from the model's transition table. SVG and PNG need Graphviz's "
            "'dot' program; DOT text does not."
        ),
    )
    add_mode_option(parser, allow_all=True, default="all")
    parser.add_argument("--machine", choices=MACHINES, default="request", help="which machine to draw")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="output format (default: from -o's suffix, else dot)"
    )
    parser.add_argument("-o", "--output", metavar="PATH", help="write here instead of standard output")
    parser.add_argument("--highlight", metavar="STATE", help="fill this control state, e.g. CancelPending")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output is not None:
        writable_file("-o", args.output)
    fmt = choose_format(args.format, args.output)
    if fmt == "png" and args.output is None:
        raise UsageError("PNG output is binary: give -o PATH")
    mode = None if args.mode.strip().lower() == "all" else parse_mode(args.mode)
    plan = build_plan(args.machine, mode, args.highlight)
    try:
        data = render(dot_source(plan), fmt)
    except RenderError as failed:
        raise UsageError(str(failed)) from None
    write_output(data, args.output)
    return 0


def choose_format(explicit: Format | None, output: str | None) -> Format:
    """``-o``'s suffix decides unless ``--format`` is given; the two must agree,
    so a file never holds one format under another's name."""
    if output is None:
        return "dot" if explicit is None else explicit
    suffix = Path(output).suffix.lower()
    implied = _SUFFIX_FORMATS.get(suffix)
    known = ", ".join(_SUFFIX_FORMATS)
    if explicit is None:
        if implied is None:
            named = f"suffix {suffix!r}" if suffix else "no suffix"
            raise UsageError(f"-o {output}: {named} names no diagram format; use one of {known} or give --format")
        return implied
    if suffix and implied != explicit:
        raise UsageError(f"-o {output} has suffix {suffix!r}, which does not match --format {explicit}")
    return explicit


def build_plan(machine: str, mode: Mode | None, highlight: str | None) -> DiagramPlan:
    if machine == "lifecycle":
        return build_lifecycle_plan(mode, highlight)
    if machine == "raw":
        return build_raw_plan(mode, highlight)
    state = None if highlight is None else parse_state(highlight, ControlState)
    plan = plan_request_diagram(mode, Highlight(state=state))
    if state is not None and all(node.state is not state for node in plan.nodes):
        where = "any mode" if mode is None else f"mode {mode.value}"
        raise UsageError(f"state {state.value} does not occur in {where}, so it cannot be highlighted")
    return plan


def build_lifecycle_plan(mode: Mode | None, highlight: str | None) -> DiagramPlan:
    if mode is not None:
        raise UsageError("--mode does not apply to the lifecycle machine: it is the same in every mode")
    # Imported here so the request diagram keeps working whatever state the
    # lifecycle model is in.
    from dynamo_backend_protocol.model.lifecycle import Phase
    from dynamo_backend_protocol.model.teach.lifecycle_diagram import plan_lifecycle_diagram

    phase = None if highlight is None else parse_state(highlight, Phase)
    return plan_lifecycle_diagram(Highlight(state=phase))


def build_raw_plan(mode: Mode | None, highlight: str | None) -> DiagramPlan:
    if mode is not None:
        raise UsageError("--mode does not apply to the raw engine adapter: it is the same in every mode")
    from dynamo_backend_protocol.model.raw_engine import RawPhase
    from dynamo_backend_protocol.model.teach.raw_diagram import plan_raw_diagram

    phase = None if highlight is None else parse_state(highlight, RawPhase)
    return plan_raw_diagram(Highlight(state=phase))


def parse_state(text: str, states: type[StateT]) -> StateT:
    wanted = text.strip().lower()
    for state in states:
        if str(state.value).lower() == wanted:
            return state
    valid = ", ".join(str(state.value) for state in states)
    raise UsageError(f"unknown state {text!r} for --highlight; valid states: {valid}")


def write_output(data: bytes, output: str | None) -> None:
    if output is None:
        # Only text formats get here (PNG needs -o), so print as text.
        sys.stdout.write(data.decode("utf-8"))
        return
    try:
        Path(output).write_bytes(data)
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
