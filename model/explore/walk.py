"""Breadth-first walks over a machine's reachable states, shared by every checker.

The request explorer, the lifecycle explorer and the diagrams all need the
same thing: every state reachable from the initial one, how each was first
reached (so a counterexample is a shortest path), and the edges between them
(so "can this state still finish?" has an answer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from dynamo_backend_protocol.model.exceptions import TABLE_WELL_FORMED, ProtocolError

S = TypeVar("S", bound=Hashable)
E = TypeVar("E")


class StateSpaceTooLarge(ProtocolError):
    """The walk passed its bound: a faulty table may grow a counter without end (a breach of
    TABLE-WELL-FORMED, which is how the checker reports it)."""

    rule = TABLE_WELL_FORMED


class Walk(Generic[S, E]):
    """States in discovery order, each with the (state, event) it was first reached from."""

    def __init__(self, initial: S) -> None:
        self.initial = initial
        self.parent: dict[S, tuple[S, E] | None] = {initial: None}
        self.edges: dict[S, list[tuple[E, S]]] = {}
        """Each expanded state's allowed events and their successors, in event order."""
        self.transitions = 0

    def run(
        self,
        expand: Callable[[S], Iterable[tuple[E, S, bool]]],
        admit: Callable[[S], bool],
        max_states: int,
    ) -> None:
        """Walk to a fixpoint.  ``expand`` yields ``(event, successor, clean)`` for
        each allowed event; a successor is expanded in turn only if the step was
        clean and ``admit`` accepts it (a state that breaks a rule is reported
        by the caller, not explored further)."""
        queue: deque[S] = deque([self.initial]) if admit(self.initial) else deque()
        while queue:
            state = queue.popleft()
            successors = self.edges.setdefault(state, [])
            for ev, after, clean in expand(state):
                self.transitions += 1
                successors.append((ev, after))
                if after in self.parent:
                    continue
                self.parent[after] = (state, ev)
                if len(self.parent) > max_states:
                    raise StateSpaceTooLarge(f"more than {max_states} reachable states")
                if admit(after) and clean:
                    queue.append(after)

    def path_to(self, state: S) -> list[E]:
        """The events of a shortest path from the initial state."""
        events: list[E] = []
        link = self.parent[state]
        while link is not None:
            state, ev = link
            events.append(ev)
            link = self.parent[state]
        events.reverse()
        return events

    def first_stuck(self, finished: Callable[[S], bool]) -> S | None:
        """The shallowest expanded state from which no path reaches a finished state."""
        reverse: dict[S, list[S]] = {}
        for source, targets in self.edges.items():
            for _, target in targets:
                reverse.setdefault(target, []).append(source)
        can_finish = {state for state in self.parent if finished(state)}
        frontier = deque(can_finish)
        while frontier:
            for source in reverse.get(frontier.popleft(), []):
                if source not in can_finish:
                    can_finish.add(source)
                    frontier.append(source)
        for state in self.parent:
            if state not in can_finish and state in self.edges:
                return state
        return None


def shortest_walk(
    start: S, moves: Callable[[S], Iterable[tuple[E, S]]], goal: Callable[[E, S], bool]
) -> tuple[list[E], S] | None:
    """A shortest path of one step or more from ``start`` whose last step ``goal`` accepts, and where it ends;
    None if no such step can be reached.  ``moves`` yields ``(event, successor)`` in a fixed order, so the path
    (and a lasso built from it) is the same on every run.  The liveness checkers build their lasso's loop from
    these walks: a witness step per fairness class, then back to the loop's entry."""
    parent: dict[S, tuple[S, E]] = {}
    queue: deque[S] = deque([start])
    seen = {start}
    while queue:
        state = queue.popleft()
        for ev, after in moves(state):
            if goal(ev, after):
                path = [ev]
                while state != start:
                    state, previous = parent[state]
                    path.append(previous)
                return path[::-1], after
            if after not in seen:
                seen.add(after)
                parent[after] = (state, ev)
                queue.append(after)
    return None
