"""What a diagram of the request machine shows, decided from the table alone.

This module chooses nodes, edges and label text; drawing them is the job of
``reference/diagrams.py``.  Keeping the choice pure lets the tests check what a
reader will see (which rows, which labels, what is marked decode-only) without
Graphviz.

Readability choices, each made once here:

* rows that share a source, a target and a style become one edge with one
  label line per row, and rows under the same rule that differ only in their
  trigger (``stop`` and ``kill``) share a line;
* each condition of a guard that is constant where the row is tested in the
  drawn modes is replaced by its value (``not decode or first-token seen``
  reads ``first-token seen`` in decode and vanishes in agg), and a guard that
  then always holds is left off, because there it decides nothing;
* rows the protocol records as ignored are listed inside their state's node
  instead of being drawn as self-loops;
* in the all-modes diagram a row that only decode mode can fire is marked
  decode-only; a mode's own diagram contains only rows that mode can fire and
  marks nothing decode-only (there everything is);
* the legend lists only the conventions the picture uses.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from dynamo_backend_protocol.model.explore.reachability import ModeGraph, explore_graphs
from dynamo_backend_protocol.model.table import REQUEST_TABLE, Transition
from dynamo_backend_protocol.model.vocabulary import ControlState, Mode

StateId: TypeAlias = enum.Enum
"""A control state of whichever machine is drawn (request or lifecycle)."""

RANK_ORDER: tuple[tuple[ControlState, ...], ...] = (
    (ControlState.IDLE,),
    (ControlState.STREAMING,),
    (ControlState.CANCEL_PENDING,),
    (ControlState.ABORTED,),
    (ControlState.DONE,),
)
"""Top to bottom, so a request's life reads downwards.  CancelPending gets its
own rank above Aborted: side by side, the edge between them ran level and its
label collided with the edge from Streaming."""


@dataclass(frozen=True)
class EdgeLine:
    """One label line: one or more rows that differ only in their trigger."""

    text: str
    remembers: str
    """What the rows record without acting, e.g. ``record cancellation``; may be empty."""
    rules: tuple[str, ...]
    decode_only: bool
    highlighted: bool
    fired_by: tuple[tuple[object, StateId], ...] = ()
    """The (table row, source state) pairs this line stands for."""


@dataclass(frozen=True)
class PlannedEdge:
    source: StateId
    target: StateId
    lines: tuple[EdgeLine, ...]

    @property
    def decode_only(self) -> bool:
        return all(line.decode_only for line in self.lines)

    @property
    def is_loop(self) -> bool:
        return self.source is self.target

    @property
    def highlighted(self) -> bool:
        return any(line.highlighted for line in self.lines)

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(rule for line in self.lines for rule in line.rules))


@dataclass(frozen=True)
class PlannedNode:
    state: StateId
    initial: bool
    absorbing: bool
    decode_only: bool
    ignores: tuple[str, ...]
    """One entry per ignored-row group, e.g. ``stop | kill [already cancelled]``."""
    highlighted: bool


@dataclass(frozen=True)
class DiagramPlan:
    name: str
    """Graph name, e.g. ``request_decode``."""
    title: str
    nodes: tuple[PlannedNode, ...]
    edges: tuple[PlannedEdge, ...]
    ranks: tuple[tuple[StateId, ...], ...]
    """Groups of states drawn side by side, top to bottom; only drawn states."""
    legend: tuple[str, ...]

    def node(self, state: StateId) -> PlannedNode:
        for node in self.nodes:
            if node.state is state:
                return node
        raise KeyError(state)

    def edge_of(self, row: object, source: StateId) -> PlannedEdge | None:
        """The edge that draws ``row`` fired from ``source``; None for a row not
        drawn as an edge (an ignored one, listed in its state)."""
        for edge in self.edges:
            if any(fired is row and at is source for line in edge.lines for fired, at in line.fired_by):
                return edge
        return None


@dataclass(frozen=True)
class Highlight:
    """What a frame of the teaching tool emphasises."""

    state: StateId | None = None
    row: object | None = None
    """The table row that fired (of either machine's table)."""
    source: StateId | None = None
    """The state the highlighted row fired from (a row may have several sources)."""


NO_HIGHLIGHT = Highlight()


@dataclass(frozen=True)
class _Use:
    """One (row, source state) pair that fires in some drawn mode."""

    row: Transition
    source: ControlState
    modes: frozenset[Mode]
    """Every mode in which it fires, drawn or not: decode-only is a global fact."""
    drawn: frozenset[Mode]
    """The drawn modes in which it fires."""
    guard_text: str | None
    """The guard with every condition that is constant in the drawn modes
    replaced by its value; None when it then always holds."""
    several_modes_drawn: bool

    @property
    def target(self) -> ControlState:
        return self.source if self.row.target is None else self.row.target

    def decode_only(self) -> bool:
        """Marked as decode-only: only where other modes are drawn beside it."""
        return self.several_modes_drawn and self.modes == frozenset({Mode.DECODE})

    def suffix(self, drawn_modes: frozenset[Mode]) -> str:
        """Names the modes when a use fires in some but not all drawn modes and
        decode-only styling does not already say so."""
        if self.drawn == drawn_modes or self.decode_only():
            return ""
        return " (" + ", ".join(m.value for m in Mode if m in self.drawn) + " only)"


def plan_request_diagram(mode: Mode | None = None, highlight: Highlight = NO_HIGHLIGHT) -> DiagramPlan:
    """The diagram of ``mode``, or of every mode at once when ``mode`` is None."""
    drawn_modes = frozenset(Mode) if mode is None else frozenset({mode})
    graphs = explore_graphs()
    uses = _uses(graphs, drawn_modes)

    ignored = [use for use in uses if use.row.ignored]
    moving = [use for use in uses if not use.row.ignored]
    reached_in: dict[ControlState, set[Mode]] = {}
    for graph in graphs.values():
        for state in graph.states:
            reached_in.setdefault(state.control, set()).add(graph.mode)
    drawn_states = {state for state, modes in reached_in.items() if modes & drawn_modes}

    edges = _edges(moving, drawn_modes, highlight)
    leaves = {edge.source for edge in edges if edge.target is not edge.source}
    acts_in_place = {edge.source for edge in edges if edge.target is edge.source}
    nodes = tuple(
        PlannedNode(
            state=state,
            initial=state is ControlState.IDLE,
            absorbing=state not in leaves and state not in acts_in_place,
            decode_only=mode is None and reached_in[state] == {Mode.DECODE},
            ignores=_ignore_lines(state, ignored, drawn_modes),
            highlighted=highlight.state is state,
        )
        for state in ControlState
        if state in drawn_states
    )
    ranks = tuple(
        tuple(state for state in group if state in drawn_states)
        for group in RANK_ORDER
        if any(state in drawn_states for state in group)
    )
    name = "request_all" if mode is None else f"request_{mode.value}"
    title = "Request protocol, all modes" if mode is None else f"Request protocol, mode {mode.value}"
    return DiagramPlan(name, title, nodes, edges, ranks, _legend(mode, nodes, edges))


def _uses(graphs: dict[Mode, ModeGraph], drawn_modes: frozenset[Mode]) -> list[_Use]:
    """Every (row, source) that fires in some drawn mode, in table order."""
    uses: list[_Use] = []
    for row in REQUEST_TABLE:
        for source in row.sources:
            modes = frozenset(mode for mode, graph in graphs.items() if graph.fires(row, source))
            drawn = modes & drawn_modes
            if not drawn:
                continue
            points = [point for mode in drawn for point in graphs[mode].guard_points(row, source)]
            uses.append(_Use(row, source, modes, drawn, row.guard.specialised(points), len(drawn_modes) > 1))
    return uses


def _line_key(use: _Use, drawn_modes: frozenset[Mode]) -> tuple[object, ...]:
    # Rows under different rules stay on separate lines even when they look
    # alike (a token chunk and an empty chunk differ in what they prove).
    return (use.row.rule, use.guard_text, use.row.actions, use.decode_only(), use.suffix(drawn_modes))


def _edge_key(use: _Use) -> tuple[ControlState, ControlState, bool]:
    # Decode-only rows get their own (dashed) edge, except on self-loops: two
    # loops on one state overlap, so a state's loops share one edge and the
    # decode-only lines are told apart by their text colour.
    decode_only = use.decode_only() and use.target is not use.source
    return (use.source, use.target, decode_only)


def _edges(moving: Sequence[_Use], drawn_modes: frozenset[Mode], highlight: Highlight) -> tuple[PlannedEdge, ...]:
    groups: dict[tuple[ControlState, ControlState, bool], list[_Use]] = {}
    for use in moving:
        groups.setdefault(_edge_key(use), []).append(use)
    edges: list[PlannedEdge] = []
    for (source, target, _), members in groups.items():
        lines: dict[tuple[object, ...], list[_Use]] = {}
        for use in members:
            lines.setdefault(_line_key(use, drawn_modes), []).append(use)
        edge_lines = tuple(_edge_line(same, drawn_modes, highlight) for same in lines.values())
        edges.append(PlannedEdge(source, target, edge_lines))
    return tuple(edges)


def _triggers(uses: Sequence[_Use]) -> str:
    return " | ".join(dict.fromkeys(use.row.trigger.value for use in uses))


def _edge_line(uses: Sequence[_Use], drawn_modes: frozenset[Mode], highlight: Highlight) -> EdgeLine:
    first = uses[0]
    text = _triggers(uses)
    if first.guard_text is not None:
        text += f" [{first.guard_text}]"
    if first.row.actions:
        text += " / " + ", ".join(action.value for action in first.row.actions)
    text += first.suffix(drawn_modes)
    lit = any(use.row is highlight.row and use.source is highlight.source for use in uses)
    rules = tuple(dict.fromkeys(use.row.rule for use in uses))
    fired_by = tuple((use.row, use.source) for use in uses)
    return EdgeLine(text, _remembers(first), rules, first.decode_only(), lit, fired_by)


def _remembers(use: _Use) -> str:
    """Shown only for rows with no actions, which would otherwise look like no-ops."""
    if use.row.actions:
        return ""
    return ", ".join(effect.value for effect in use.row.effects)


def _ignore_lines(state: ControlState, ignored: Sequence[_Use], drawn_modes: frozenset[Mode]) -> tuple[str, ...]:
    groups: dict[tuple[str | None, str], list[_Use]] = {}
    for use in ignored:
        if use.source is state:
            groups.setdefault((use.guard_text, use.suffix(drawn_modes)), []).append(use)
    lines: list[str] = []
    for (guard_text, suffix), uses in groups.items():
        text = _triggers(uses)
        if guard_text is not None:
            text += f" [{guard_text}]"
        lines.append(text + suffix)
    return tuple(lines)


def _legend(mode: Mode | None, nodes: Sequence[PlannedNode], edges: Sequence[PlannedEdge]) -> tuple[str, ...]:
    """Only what the picture uses: no decode styling or ignore lists where none is drawn."""
    guarded = any("[" in line.text for edge in edges for line in edge.lines)
    legend = ["edge: event [guard] / actions, in order" if guarded else "edge: event / actions, in order"]
    if any(edge.decode_only or any(line.decode_only for line in edge.lines) for edge in edges):
        legend.append("blue, dashed: decode mode only")
    if any(edge.is_loop for edge in edges):
        legend.append("'on ...' in a state: events handled there without leaving it")
    if any(node.ignores for node in nodes):
        legend.append("grey text in a state: events it ignores")
    if mode is not None:
        legend.append(f"only what mode {mode.value} can do is drawn")
    return tuple(legend)
