"""``teach``: write one self-contained HTML page that lets a reader play the protocol.

Everything the page shows is computed here from the model (see
:mod:`dynamo_backend_protocol.model.teach.playground`) and embedded as data;
the page's script only navigates it.  No network, no external scripts or
fonts: the diagrams are inline SVG drawn by Graphviz's ``dot``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.rules import RULES
from dynamo_backend_protocol.model.teach.diagram_plan import DiagramPlan, plan_request_diagram
from dynamo_backend_protocol.model.teach.lifecycle_diagram import plan_lifecycle_diagram
from dynamo_backend_protocol.model.teach.playground import Playground, lifecycle_playground, request_playground
from dynamo_backend_protocol.reference.cli.support import (
    Subparsers,
    UsageError,
    add_mode_option,
    parse_modes,
    read_text_file,
    writable_file,
)
from dynamo_backend_protocol.reference.diagrams import RenderError, dot_source, element_id, node_id, render

TITLE = "Play the dynamo-backend-common protocol"
DEFAULT_SPEC = Path("spec") / "protocol.md"
VARIABLE_LABELS = {
    "first_token": "first token seen",
    "cancel": "cancellation",
    "aborts": "abort count",
    "ended": "stream ended",
    "watching": "watching for stop/kill",
    "start": "start",
    "cleaned": "cleaned up",
    "served": "served a call",
}


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "teach",
        help="write an interactive HTML page to play the protocol",
        description=(
            "Write one self-contained HTML page (no network needed) that plays the protocol: the mode's "
            "diagram with the current state lit, a button per event (forbidden ones disabled, with the rule "
            "that forbids them), each step's narration and rule, scenario replay, back/forward and reset. "
            "Needs Graphviz's 'dot' to draw the diagrams."
        ),
    )
    parser.add_argument("-o", "--output", metavar="PATH.html", required=True, help="where to write the page")
    add_mode_option(parser, allow_all=True, default="all")
    parser.add_argument(
        "--spec", metavar="PATH", default=None,
        help=f"the spec whose rule sections the page embeds (default: {DEFAULT_SPEC} if present)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {output}: the page is HTML; give a path ending in .html")
    writable_file("-o", args.output)
    modes = parse_modes(args.mode)
    spec = find_spec(args.spec)
    try:
        page = build_page(modes, spec, output.parent)
    except RenderError as failed:
        raise UsageError(str(failed)) from None
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
    print(f"wrote {output} ({len(page) // 1024} KiB): open it in a browser, no server needed")
    return 0


@dataclass(frozen=True)
class Spec:
    """The spec the page quotes: where it is (the page links to it) and its text, read before any work."""

    path: Path
    text: str


def find_spec(given: str | None) -> Spec | None:
    if given is None:
        if not DEFAULT_SPEC.is_file():
            return None
        return Spec(DEFAULT_SPEC, read_text_file("the default spec", str(DEFAULT_SPEC)))
    return Spec(Path(given), read_text_file("--spec", given))


def build_page(modes: list[Mode], spec: Spec | None, page_dir: Path) -> str:
    texts: dict[str, int] = {}
    machines = [machine_data(request_playground(mode), plan_request_diagram(mode), texts) for mode in modes]
    machines.append(machine_data(lifecycle_playground(), plan_lifecycle_diagram(), texts))
    sections = rule_sections(spec.text) if spec is not None else {}
    data = {
        "machines": machines,
        "texts": list(texts),
        "rules": {rule: {"summary": about, "section": sections.get(rule, [])} for rule, about in RULES.items()},
        "variableLabels": VARIABLE_LABELS,
        "specLink": "" if spec is None else Path(os.path.relpath(spec.path.resolve(), page_dir.resolve())).as_posix(),
        "specNote": (
            f"Each rule's text is quoted from {spec.path}." if spec is not None
            else f"{DEFAULT_SPEC} was not found here, so rules are shown by their one-line summaries."
        ),
    }
    # "</" inside the JSON would end the <script> element early.
    embedded = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files(__package__).joinpath("teach_page.html").read_text(encoding="utf-8")
    return template.replace("__TITLE__", TITLE).replace("__DATA__", embedded)


def machine_data(played: Playground, plan: DiagramPlan, texts: dict[str, int]) -> dict[str, object]:
    """One machine as the page reads it: the moves carry the id of what they light up."""
    events = [move.event for move in played.states[0].moves]
    states = []
    for state in played.states:
        moves = []
        for move in state.moves:
            if move.row is None:
                drawn = None
            else:
                edge = plan.edge_of(move.row, move.source)
                drawn = node_id(move.source) if edge is None else element_id(edge)
            moves.append({
                "e": events.index(move.event),
                "to": move.target,
                "r": list(move.rules),
                "a": list(move.actions),
                "g": move.guard,
                "i": move.ignored,
                "s": [texts.setdefault(sentence, len(texts)) for sentence in move.sentences],
                "el": drawn,
            })
        states.append({
            "control": state.control.value,
            "node": node_id(state.control),
            "meaning": state.meaning,
            "vars": state.variables,
            "moves": moves,
        })
    scenarios = [
        {
            "name": item.name,
            "title": item.title,
            "description": item.description,
            "events": list(item.events),
            "aborts": item.aborts[played.mode],
        }
        for item in played.scenarios
        if played.mode is not None
    ]
    return {
        "key": played.key,
        "title": played.title,
        "svg": inline_svg(render(dot_source(plan), "svg").decode("utf-8")),
        "events": events,
        "states": states,
        "scenarios": scenarios,
    }


def inline_svg(svg: str) -> str:
    """The <svg> element alone: the XML prolog and doctype do not belong inside HTML."""
    return svg[svg.index("<svg"):]


_HEADING = re.compile(r"^#{1,6} ")


def rule_sections(spec_text: str) -> dict[str, list[str]]:
    """Each ``#### RULE-ID`` section of the spec as plain paragraphs."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    paragraph: list[str] = []

    def flush() -> None:
        if current is not None and paragraph:
            current.append(" ".join(paragraph))
        paragraph.clear()

    for line in spec_text.splitlines():
        if _HEADING.match(line):
            flush()
            title = line.lstrip("#").strip()
            current = sections.setdefault(title, []) if line.startswith("#### ") and title in RULES else None
        elif not line.strip():
            flush()
        elif current is not None:
            paragraph.append(line.strip())
    flush()
    return sections
