"""Fair-cycle detection: runs that never reach a liveness property's goal.

On a finite graph a run that never reaches the goal ends in a loop through
non-goal states.  Under weak fairness a loop is admissible when, for every
assumed fairness class, it either takes an event of the class or passes a
state where no event of the class is allowed.  For weak fairness it is
enough to look at the strongly connected components of the non-goal states:
a component offers every loop inside it, so it has an admissible loop iff
the loop through all of it is admissible.  A counterexample is printed as a
lasso: a shortest prefix from the initial state through a trigger state
into such a component, then the events of a loop that repeats forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dynamo_backend_protocol.model.explore.walk import shortest_walk
from dynamo_backend_protocol.model.liveness import Fairness, LivenessProperty

S = TypeVar("S", bound=Hashable)
E = TypeVar("E")

Graph = dict[S, list[tuple[E, S]]]
"""Every expanded state with its allowed events and their successors, in event order."""


@dataclass(frozen=True)
class Lasso:
    """An infinite run: ``prefix`` once, then ``cycle`` forever."""

    prefix: list[str]
    cycle: list[str]

    def describe(self) -> str:
        start = " -> ".join(self.prefix) + ", then" if self.prefix else "from the start,"
        return f"{start} forever: {' -> '.join(self.cycle)}"

    def as_dict(self) -> dict[str, object]:
        return {"prefix": self.prefix, "cycle": self.cycle}


@dataclass
class LivenessResult:
    rule: str
    name: str
    fairness: list[str]
    """The fairness the property assumes."""
    triggered: bool = False
    """Whether any reachable state triggers the property (if not, it holds vacuously)."""
    counterexample: Lasso | None = None
    """A loop that avoids the goal although every assumed fairness holds on it."""
    without: dict[str, Lasso] = field(default_factory=dict)
    """For each assumption this mode needs: the loop that dropping it lets through."""
    without_fairness: Lasso | None = None

    @property
    def holds(self) -> bool:
        return self.counterexample is None

    @property
    def needs(self) -> list[str]:
        return list(self.without)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.rule,
            "name": self.name,
            "holds": self.holds,
            "assumes": self.fairness,
            "needs": self.needs,
            "holds_without_fairness": self.without_fairness is None,
            "triggered": self.triggered,
            "counterexample": None if self.counterexample is None else self.counterexample.as_dict(),
            "lassos_without": {name: lasso.as_dict() for name, lasso in self.without.items()},
            "lasso_without_fairness": None if self.without_fairness is None else self.without_fairness.as_dict(),
        }


def check_liveness(
    graph: Graph[S, E],
    initial: S,
    prop: LivenessProperty[S, E],
    event_name: Callable[[E], str],
) -> LivenessResult:
    """The property under its own fairness, under each assumption dropped in turn, and under none."""
    fairness = list(prop.fairness)
    result = LivenessResult(prop.rule, prop.name, [f.name for f in fairness])
    result.triggered = any(prop.trigger(state) for state in graph)
    search = _Search(*_numbered(graph, initial, prop), event_name)
    result.counterexample = search.lasso(fairness)
    if result.counterexample is not None:
        return result
    for dropped in fairness:
        lasso = search.lasso([f for f in fairness if f is not dropped])
        if lasso is not None:
            result.without[dropped.name] = lasso
    result.without_fairness = search.lasso([]) if fairness else None
    return result


def _numbered(
    graph: Graph[S, E], initial: S, prop: LivenessProperty[S, E]
) -> tuple[Graph[int, E], int, LivenessProperty[int, E]]:
    """The same graph and property over state numbers: the search looks states up in its
    sets and maps many times over, and a composed state hashes its every field each time."""
    states: list[S] = []
    numbers: dict[S, int] = {}

    def number(state: S) -> int:
        found = numbers.get(state)
        if found is None:
            found = numbers[state] = len(states)
            states.append(state)
        return found

    numbered = {number(state): [(ev, number(after)) for ev, after in edges] for state, edges in graph.items()}
    start = number(initial)
    on_numbers: LivenessProperty[int, E] = LivenessProperty(
        prop.rule, prop.name, lambda n: prop.trigger(states[n]), lambda n: prop.goal(states[n]), prop.fairness
    )
    return numbered, start, on_numbers


class _Search(Generic[S, E]):
    def __init__(
        self, graph: Graph[S, E], initial: S, prop: LivenessProperty[S, E], event_name: Callable[[E], str]
    ) -> None:
        self.graph = graph
        self.initial = initial
        self.prop = prop
        self.event_name = event_name
        self.open = {state for state in graph if not prop.goal(state)}
        self.inside = {
            state: [(ev, after) for ev, after in graph[state] if after in self.open] for state in graph
        }
        components = _components([state for state in graph if state in self.open], self.inside.__getitem__)
        self.components = [
            (component, [ev for state in component for ev, after in self.inside[state] if after in component])
            for component in components
        ]
        """Each component of the non-goal states with the events of its inner edges."""

    def lasso(self, fairness: Sequence[Fairness[E]]) -> Lasso | None:
        admissible: dict[S, frozenset[S]] = {}
        for component, events in self.components:
            if self._admissible(component, events, fairness):
                admissible.update(dict.fromkeys(component, component))
        if not admissible:
            return None
        found = self._prefix(admissible)
        if found is None:
            return None
        entry, prefix = found
        cycle = self._cycle(admissible[entry], entry, fairness)
        return Lasso([self.event_name(ev) for ev in prefix], [self.event_name(ev) for ev in cycle])

    def _admissible(self, component: frozenset[S], events: list[E], fairness: Sequence[Fairness[E]]) -> bool:
        if not events:
            return False
        return all(
            any(fair.covers(ev) for ev in events)
            or any(self._disabled(fair, state) for state in component)
            for fair in fairness
        )

    def _prefix(self, admissible: dict[S, frozenset[S]]) -> tuple[S, list[E]] | None:
        """Shortest path from the initial state to a trigger state, then on through
        non-goal states into an admissible component (0-1 BFS over two phases)."""
        start: tuple[S, bool] = (self.initial, False)
        parent: dict[tuple[S, bool], tuple[tuple[S, bool], E | None] | None] = {start: None}
        queue: deque[tuple[S, bool]] = deque([start])
        while queue:
            node = queue.popleft()
            state, triggered = node
            if triggered and state in admissible:
                return state, _path(parent, node)
            if not triggered and state in self.open and self.prop.trigger(state):
                switched = (state, True)
                if switched not in parent:
                    parent[switched] = (node, None)
                    queue.appendleft(switched)
            for ev, after in self.inside[state] if triggered else self.graph.get(state, []):
                successor = (after, triggered)
                if successor not in parent and (triggered or after in self.graph):
                    parent[successor] = (node, ev)
                    queue.append(successor)
        return None

    def _cycle(self, component: frozenset[S], entry: S, fairness: Sequence[Fairness[E]]) -> list[E]:
        """A loop from ``entry`` through one witness per fairness class, back to ``entry``."""
        events: list[E] = []
        here = entry
        for fair in fairness:
            if self._disabled(fair, here):
                continue

            def witness(ev: E, after: S, fair: Fairness[E] = fair) -> bool:
                return fair.covers(ev) or self._disabled(fair, after)

            found = self._walk(component, here, witness)
            assert found is not None, "an admissible component has a witness for every fairness class"
            path, here = found
            events += path
        if here != entry or not events:
            back = self._walk(component, here, lambda ev, after: after == entry)
            assert back is not None, "a strongly connected component leads back to its entry"
            events += back[0]
        return events

    def _disabled(self, fair: Fairness[E], state: S) -> bool:
        return not any(fair.covers(ev) for ev, _ in self.graph[state])

    def _walk(self, component: frozenset[S], start: S, goal: Callable[[E, S], bool]) -> tuple[list[E], S] | None:
        """A shortest path of one step or more inside ``component`` whose last step satisfies ``goal``."""

        def inside(state: S) -> list[tuple[E, S]]:
            return [(ev, after) for ev, after in self.graph[state] if after in component]

        return shortest_walk(start, inside, goal)

def _path(parent: dict[tuple[S, bool], tuple[tuple[S, bool], E | None] | None], node: tuple[S, bool]) -> list[E]:
    events: list[E] = []
    link = parent[node]
    while link is not None:
        node, ev = link
        if ev is not None:
            events.append(ev)
        link = parent[node]
    events.reverse()
    return events


def _components(states: Sequence[S], successors: Callable[[S], list[tuple[E, S]]]) -> list[frozenset[S]]:
    """Strongly connected components of the graph ``successors`` draws on ``states`` (iterative Tarjan)."""
    index: dict[S, int] = {}
    low: dict[S, int] = {}
    stack: list[S] = []
    on_stack: set[S] = set()
    found: list[frozenset[S]] = []
    for root in states:
        if root in index:
            continue
        work: list[tuple[S, int]] = [(root, 0)]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            state, position = work[-1]
            edges = successors(state)
            if position < len(edges):
                work[-1] = (state, position + 1)
                after = edges[position][1]
                if after not in index:
                    index[after] = low[after] = len(index)
                    stack.append(after)
                    on_stack.add(after)
                    work.append((after, 0))
                elif after in on_stack:
                    low[state] = min(low[state], index[after])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[state])
            if low[state] == index[state]:
                members: set[S] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.add(member)
                    if member == state:
                        break
                found.append(frozenset(members))
    return found
