"""An explicit-state model checker for the request machine.

Breadth-first from the initial state over every event, per mode, until no new
state appears.  Every invariant is checked on every reachable state and every
transition; because the search is breadth-first, the first counterexample
found for an invariant is a shortest one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dynamo_backend_protocol.model.invariants import (
    DONE_REACHABLE,
    STATE_INVARIANTS,
    STEP_INVARIANTS,
    TABLE_WELL_FORMED,
)
from dynamo_backend_protocol.model.machine import (
    DEFAULT_TABLE,
    CompiledTable,
    ProtocolViolation,
    Step,
    TableError,
)
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ControlState, Event, Mode

MAX_STATES = 100_000
"""A faulty table could grow a counter forever; past this the search gives up."""


@dataclass
class InvariantResult:
    rule: str
    name: str
    holds: bool = True
    counterexample: list[str] | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.rule,
            "name": self.name,
            "holds": self.holds,
            "counterexample": self.counterexample,
        }


_Fail = Callable[[InvariantResult, list[str], str], None]
_PathTo = Callable[[RequestState], list[str]]


@dataclass
class ModeReport:
    mode: Mode
    states: int
    transitions: int
    seconds: float
    invariants: list[InvariantResult]

    @property
    def ok(self) -> bool:
        return all(result.holds for result in self.invariants)

    def violations(self) -> list[InvariantResult]:
        return [result for result in self.invariants if not result.holds]

    def as_dict(self) -> dict[str, object]:
        return {
            "states": self.states,
            "transitions": self.transitions,
            "seconds": round(self.seconds, 6),
            "invariants": [result.as_dict() for result in self.invariants],
        }


@dataclass
class ExplorationReport:
    modes: dict[Mode, ModeReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.modes.values())

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "modes": {m.value: r.as_dict() for m, r in self.modes.items()}}


def explore(mode: Mode, table: CompiledTable = DEFAULT_TABLE) -> ModeReport:
    started = time.perf_counter()
    results: dict[str, InvariantResult] = {}
    order: list[str] = []

    def result_for(rule: str, name: str) -> InvariantResult:
        if name not in results:
            results[name] = InvariantResult(rule, name)
            order.append(name)
        return results[name]

    for state_inv in STATE_INVARIANTS:
        result_for(state_inv.rule, state_inv.name)
    for step_inv in STEP_INVARIANTS:
        result_for(step_inv.rule, step_inv.name)
    well_formed = result_for(TABLE_WELL_FORMED, "table_is_deterministic_and_complete")
    reachable = result_for(DONE_REACHABLE, "done_reachable_from_every_state")

    initial = table.initial(mode)
    parent: dict[RequestState, tuple[RequestState, Event] | None] = {initial: None}
    edges: dict[RequestState, list[RequestState]] = {}
    queue: deque[RequestState] = deque([initial])
    transitions = 0

    def path_to(state: RequestState) -> list[str]:
        names: list[str] = []
        link = parent[state]
        while link is not None:
            state, ev = link
            names.append(ev.name)
            link = parent[state]
        names.reverse()
        return names

    def fail(result: InvariantResult, counterexample: list[str], detail: str) -> None:
        if result.holds:
            result.holds = False
            result.counterexample = counterexample
            result.detail = detail

    def check_state(state: RequestState) -> bool:
        clean = True
        for inv in STATE_INVARIANTS:
            if not inv.holds(state):
                fail(results[inv.name], path_to(state), f"reaches {state.describe()}")
                clean = False
        return clean

    check_state(initial)
    while queue:
        state = queue.popleft()
        successors = edges.setdefault(state, [])
        for ev in ALL_EVENTS:
            try:
                step = table.step(state, ev)
            except ProtocolViolation:
                continue
            except TableError as error:
                fail(well_formed, [*path_to(state), ev.name], str(error))
                continue
            transitions += 1
            step_clean = _check_step(step, results, fail, path_to)
            after = step.after
            successors.append(after)
            if after not in parent:
                parent[after] = (state, ev)
                if len(parent) > MAX_STATES:
                    fail(well_formed, path_to(after), f"state space exceeds {MAX_STATES} states")
                    queue.clear()
                    break
                # A violating state is reported, not expanded: a broken table
                # may otherwise grow a counter without end.
                if check_state(after) and step_clean:
                    queue.append(after)

    _check_done_reachable(parent, edges, reachable, fail, path_to)
    return ModeReport(
        mode=mode,
        states=len(parent),
        transitions=transitions,
        seconds=time.perf_counter() - started,
        invariants=[results[name] for name in order],
    )


def _check_step(step: Step, results: dict[str, InvariantResult], fail: _Fail, path_to: _PathTo) -> bool:
    clean = True
    for inv in STEP_INVARIANTS:
        if not inv.holds(step):
            detail = (
                f"{step.event.name} in {step.before.describe()} -> "
                f"{step.after.describe()} / {[a.value for a in step.actions]}"
            )
            fail(results[inv.name], [*path_to(step.before), step.event.name], detail)
            clean = False
    return clean


def _check_done_reachable(
    parent: dict[RequestState, tuple[RequestState, Event] | None],
    edges: dict[RequestState, list[RequestState]],
    result: InvariantResult,
    fail: _Fail,
    path_to: _PathTo,
) -> None:
    reverse: dict[RequestState, list[RequestState]] = {}
    for source, targets in edges.items():
        for target in targets:
            reverse.setdefault(target, []).append(source)
    can_finish = {s for s in parent if s.control is ControlState.DONE}
    frontier = deque(can_finish)
    while frontier:
        for source in reverse.get(frontier.popleft(), []):
            if source not in can_finish:
                can_finish.add(source)
                frontier.append(source)
    # States are in discovery order (breadth-first), so the first stuck one is shallowest.
    for state in parent:
        if state not in can_finish and state in edges:
            fail(result, path_to(state), f"no event sequence reaches Done from {state.describe()}")
            return


def explore_all(modes: Iterable[Mode] = tuple(Mode), table: CompiledTable = DEFAULT_TABLE) -> ExplorationReport:
    report = ExplorationReport()
    for mode in modes:
        report.modes[mode] = explore(mode, table)
    return report
