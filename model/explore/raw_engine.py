"""Exhaustive exploration of the raw engine adapter's machine (:mod:`..raw_engine`).

Breadth-first over every event in every reachable state (the count of
forwarded objects capped, so the graph is finite): each step is judged by
the step invariants, each new state by the state invariants, and Done must
be reachable from every state.  Read by ``check --machine raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.raw_engine import (
    RAW_STATE_INVARIANTS,
    RAW_STEP_INVARIANTS,
    RAW_TABLE,
    RawEvent,
    RawPhase,
    RawState,
    RawTransition,
    raw_step,
)


@dataclass(frozen=True)
class RawExploration:
    """Every state reachable from Idle (bounded: forwarded objects count up to ``depth``), and the
    invariants that failed, each with the event path that reaches it."""

    states: int
    steps: int
    failures: tuple[tuple[str, str, tuple[RawEvent, ...]], ...]
    """(rule, invariant name, path)."""
    done_reachable: bool


def explore_raw(table: tuple[RawTransition, ...] = RAW_TABLE, depth: int = 2) -> RawExploration:
    """Breadth-first over every event in every reachable state: each step is judged by the step
    invariants, each state by the state invariants, and Done must be reachable from every state."""
    start = RawState()
    paths: dict[RawState, tuple[RawEvent, ...]] = {start: ()}
    queue = [start]
    edges: dict[RawState, set[RawState]] = {}
    failures: list[tuple[str, str, tuple[RawEvent, ...]]] = []
    steps = 0
    while queue:
        state = queue.pop(0)
        for event in RawEvent:
            try:
                step = raw_step(state, event, table)
            except ProtocolViolation:
                continue
            steps += 1
            path = (*paths[state], event)
            for step_invariant in RAW_STEP_INVARIANTS:
                if not step_invariant.holds(step):
                    failures.append((step_invariant.rule, step_invariant.name, path))
            after = replace(step.after, forwarded=min(step.after.forwarded, depth))
            edges.setdefault(state, set()).add(after)
            if after not in paths:
                paths[after] = path
                queue.append(after)
                for state_invariant in RAW_STATE_INVARIANTS:
                    if not state_invariant.holds(after):
                        failures.append((state_invariant.rule, state_invariant.name, path))
    reaches_done = {state for state in paths if state.phase is RawPhase.DONE}
    changed = True
    while changed:
        changed = False
        for state, targets in edges.items():
            if state not in reaches_done and targets & reaches_done:
                reaches_done.add(state)
                changed = True
    return RawExploration(len(paths), steps, tuple(failures), reaches_done == set(paths))
