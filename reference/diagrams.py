"""Drawing a :class:`DiagramPlan` with Graphviz: DOT text, SVG and PNG.

DOT text needs only the ``graphviz`` Python package; SVG and PNG need the
``dot`` program, and its absence is reported as :class:`DotNotInstalled`
rather than a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
from html import escape
from typing import Literal

# The graphviz package ships no type information; its few calls used here are
# wrapped in typed functions below.
import graphviz  # type: ignore[import-untyped, unused-ignore]
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.teach.diagram_plan import DiagramPlan, EdgeLine, PlannedEdge, PlannedNode, StateId

Format = Literal["dot", "svg", "png"]
FORMATS: tuple[Format, ...] = ("dot", "svg", "png")

_FONT = "Helvetica"
_DECODE_COLOUR = "#1f5fbf"
_HIGHLIGHT_EDGE = "#d9480f"
_HIGHLIGHT_FILL = "#ffe8a3"
_IGNORED_COLOUR = "#6b6b6b"
_WRAP_LONE_AT = 40
_WRAP_GROUPED_AT = 60
"""Characters after which an edge line is wrapped before its actions: a lone
line sooner, since it alone sets its label's width; long lines widened the
picture and ran into neighbouring edges."""

INSTALL_HINT = "install it with `apt-get install graphviz` (or use --format dot)"


class RenderError(ProtocolError):
    """A diagram could not be rendered; the message is one line for the user."""


class DotNotInstalled(RenderError):
    """SVG or PNG was asked for but Graphviz's ``dot`` program is not on PATH."""

    def __init__(self, fmt: str) -> None:
        super().__init__(f"rendering {fmt} needs the Graphviz 'dot' program, which is not installed; {INSTALL_HINT}")


class DotFailed(RenderError):
    """Graphviz's ``dot`` ran but did not produce the picture."""

    def __init__(self, fmt: str, status: int, stderr: bytes) -> None:
        said = " ".join(stderr.decode("utf-8", "replace").split()) or "no message"
        super().__init__(f"Graphviz 'dot' failed rendering {fmt} (exit status {status}): {said}")


def build_graph(plan: DiagramPlan) -> graphviz.Digraph:
    graph = graphviz.Digraph(plan.name)
    graph.attr(
        label=_graph_label(plan),
        labelloc="t",
        fontname=_FONT,
        rankdir="TB",
        nodesep="0.4",
        ranksep="0.6",
        newrank="true",
    )
    # Sizes chosen to read on a slide: 12 pt edge text, 15 pt state names.
    graph.attr("node", fontname=_FONT, fontsize="15", shape="box", style="rounded", margin="0.15,0.08")
    graph.attr("edge", fontname=_FONT, fontsize="12", arrowsize="0.8")
    # The start marker sits on Idle's rank so the arrow into Idle stays short.
    graph.node("start", label="", shape="point", width="0.15")
    # A row that stays in its state is listed inside the state's box: drawn as
    # a self-loop, its label ran into the loop's arrowhead and widened the picture.
    in_place = {edge.source: edge for edge in plan.edges if edge.is_loop}
    for node in plan.nodes:
        _add_node(graph, node, in_place.get(node.state))
    for rank, states in enumerate(plan.ranks):
        with graph.subgraph(name=f"rank_{rank}") as same:
            same.attr(rank="same")
            if rank == 0:
                same.node("start")
            for state in states:
                same.node(state.value)
    initial = next(node for node in plan.nodes if node.initial)
    graph.edge("start", initial.state.value, tooltip=f"initial state: {initial.state.value}")
    for edge in plan.edges:
        if not edge.is_loop:
            _add_edge(graph, edge)
    return graph


def element_id(edge: PlannedEdge) -> str:
    """The SVG id of what draws ``edge``: its arrow, or for a row that stays in
    its state, the state's box."""
    if edge.is_loop:
        return node_id(edge.source)
    return f"edge-{edge.source.value}-{edge.target.value}" + ("-decode" if edge.decode_only else "")


def node_id(state: StateId) -> str:
    return f"state-{state.value}"


def _graph_label(plan: DiagramPlan) -> str:
    legend = "".join(f'<BR ALIGN="LEFT"/>{escape(line)}' for line in plan.legend)
    return (
        f'<<B>{escape(plan.title)}</B><BR/>'
        f'<FONT POINT-SIZE="12" COLOR="{_IGNORED_COLOUR}">{legend}<BR ALIGN="LEFT"/></FONT>>'
    )


def _add_node(graph: graphviz.Digraph, node: PlannedNode, in_place: PlannedEdge | None) -> None:
    colour = _DECODE_COLOUR if node.decode_only else "black"
    style = ["rounded"]
    if node.decode_only:
        style.append("dashed")
    if node.highlighted:
        style.append("filled")
    # The state's name centred above its lines, which start at one left edge: centred, lines of
    # different lengths each began somewhere else, and their "(remembers: ...)" parts drifted.
    label = f'<B>{escape(node.state.value)}</B><BR/>'
    lines: list[str] = []
    if node.decode_only:
        lines.append('<FONT POINT-SIZE="12">decode only</FONT>')
    if in_place is not None:
        lines.extend(f'<FONT POINT-SIZE="12">{_in_place_markup(stays, node.decode_only)}</FONT>'
                     for stays in in_place.lines)
    lines.extend(f'<FONT POINT-SIZE="12" COLOR="{_IGNORED_COLOUR}">ignores {escape(ignored)}</FONT>'
                 for ignored in node.ignores)
    label += "".join(f'{line}<BR ALIGN="LEFT"/>' for line in lines)
    graph.node(
        node.state.value,
        id=node_id(node.state),
        label=f"<{label}>",
        color=colour,
        fontcolor=colour,
        style=",".join(style),
        fillcolor=_HIGHLIGHT_FILL if node.highlighted else "white",
        peripheries="2" if node.absorbing else "1",
        penwidth="2" if node.highlighted else "1",
    )


def _in_place_markup(line: EdgeLine, node_is_decode_only: bool) -> str:
    text = _line_text(line)
    colour = _DECODE_COLOUR if line.decode_only or node_is_decode_only else "black"
    if line.decode_only and not node_is_decode_only:
        text += " [decode only]"
    text = f'<FONT COLOR="{colour}">on {text}</FONT>'
    return f"<B>{text}</B>" if line.highlighted else text


def _line_text(line: EdgeLine) -> str:
    # One run of one font: Graphviz places each change of font as its own piece of text, at a place
    # measured with its own font metrics, and a browser's font of another width drew the italic
    # "(remembers: ...)" pieces apart from their lines.
    text = escape(line.text)
    if line.remembers:
        text += f" (remembers: {escape(line.remembers)})"
    return text


def _line_markup(line: EdgeLine, mixed: bool, wrap_at: int) -> str:
    text = _line_text(line)
    if len(line.text) > wrap_at:
        text = text.replace(" / ", '<BR ALIGN="LEFT"/>    / ', 1)
    if line.decode_only and mixed:
        text = f'<FONT COLOR="{_DECODE_COLOUR}">{text} [decode only]</FONT>'
    if line.highlighted:
        text = f"<B>{text}</B>"
    return text + '<BR ALIGN="LEFT"/>'


EDGE_PARTS = ("-in", "-label")
"""An edge with a label is drawn as three elements: its first half (id suffix ``-in``), its label
(``-label``) and its second half, which ends in the arrowhead and carries the edge's own id."""


def _add_edge(graph: graphviz.Digraph, edge: PlannedEdge) -> None:
    mixed = not edge.decode_only and any(line.decode_only for line in edge.lines)
    wrap_at = _WRAP_LONE_AT if len(edge.lines) == 1 else _WRAP_GROUPED_AT
    label = "".join(_line_markup(line, mixed, wrap_at) for line in edge.lines)
    colour = _DECODE_COLOUR if edge.decode_only else "black"
    if edge.highlighted:
        colour = _HIGHLIGHT_EDGE
    drawn = element_id(edge)
    line = {
        "color": colour,
        "style": "dashed" if edge.decode_only else "solid",
        "penwidth": "2.5" if edge.highlighted else "1",
        "tooltip": "rules: " + ", ".join(edge.rules),
    }
    # The label is a box the edge runs through, not text beside it: beside it, where two edges ran
    # close, a label sat between them and read as either one's.
    middle = drawn + "-label"
    graph.node(middle, id=middle, label=f"<{label}>", shape="plain", fontsize="12",
               fontcolor=_DECODE_COLOUR if edge.decode_only else "black", tooltip=line["tooltip"])
    graph.edge(edge.source.value, middle, id=drawn + "-in", arrowhead="none", **line)
    graph.edge(middle, edge.target.value, id=drawn, **line)


def dot_source(plan: DiagramPlan) -> str:
    source: str = build_graph(plan).source
    return source


def dot_available() -> bool:
    return shutil.which("dot") is not None


DOT_SECONDS = 60
"""Bound on one ``dot`` run; the request diagrams take well under a second."""


def render(dot_text: str, fmt: Format) -> bytes:
    """DOT text as-is (UTF-8), or rendered by ``dot`` to SVG or PNG."""
    if fmt == "dot":
        return dot_text.encode("utf-8")
    dot = shutil.which("dot")
    if dot is None:
        raise DotNotInstalled(fmt)
    # Run directly rather than through graphviz.Source.pipe: a dot that fails
    # before reading its input made that raise BrokenPipeError, losing dot's message.
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=DOT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise DotFailed(fmt, -1, f"no answer within {DOT_SECONDS} s".encode()) from None
    except OSError as error:
        raise DotFailed(fmt, -1, str(error).encode()) from None
    if done.returncode != 0:
        raise DotFailed(fmt, done.returncode, done.stderr)
    return done.stdout
