"""Checking every invariant of a machine on every reachable state and step.

One procedure serves the request machine and the lifecycle machine: walk
breadth-first from the initial state over every event; check state
invariants on each state when it is first reached and step invariants on
every step; record for each violated invariant its first, hence shortest,
counterexample; then check that every state can still finish, and look for
fair runs that never reach a liveness property's goal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.explore.liveness import LivenessResult, check_liveness
from dynamo_backend_protocol.model.explore.walk import StateSpaceTooLarge, Walk
from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.liveness import LivenessProperty

S = TypeVar("S", bound=Hashable)
E = TypeVar("E")
T = TypeVar("T")
X = TypeVar("X")


@dataclass
class InvariantResult:
    rule: str
    name: str
    holds: bool = True
    counterexample: list[str] | None = None
    detail: str | None = None

    def fail(self, counterexample: list[str], detail: str) -> None:
        """Keep the first failure: the walk is breadth-first, so it is a shortest one."""
        if self.holds:
            self.holds, self.counterexample, self.detail = False, counterexample, detail

    def as_dict(self) -> dict[str, object]:
        return {"id": self.rule, "name": self.name, "holds": self.holds, "counterexample": self.counterexample}


@dataclass(frozen=True)
class MachineSpec(Generic[S, E, T]):
    """How to step one machine and what must hold of it."""

    initial: S
    events: Sequence[E]
    step: Callable[[S, E], T]
    after: Callable[[T], S]
    event_name: Callable[[E], str]
    describe_state: Callable[[S], str]
    describe_step: Callable[[T], str]
    state_invariants: Sequence[Invariant[S]]
    step_invariants: Sequence[Invariant[T]]
    forbidden: tuple[type[Exception], ...]
    """Raised by ``step`` for an event the protocol does not allow: not a transition."""
    malformed: tuple[type[Exception], ...]
    """Raised by ``step`` when the table itself is faulty: a violation of ``well_formed``."""
    well_formed: tuple[str, str]
    """(rule, name) of the table's own soundness."""
    finished: Callable[[S], bool]
    can_finish: tuple[str, str]
    """(rule, name) of "from every state some event sequence finishes"."""
    liveness: Sequence[LivenessProperty[S, E]] = ()
    max_states: int = 100_000
    stop_at_first_violation: bool = False
    """For a caller that only asks whether anything breaks (the mutation score)."""
    explore_past_violations: bool = False
    """Expand states past a violation too, for a caller comparing with a checker that does (SPIN)."""


def _names(predicates: Sequence[Invariant[X]]) -> list[tuple[str, str]]:
    return [(predicate.rule, predicate.name) for predicate in predicates]


class _Stopped(ProtocolError):
    """The first violation was found and the caller asked for no more."""


@dataclass
class CheckRun:
    states: int
    transitions: int
    invariants: list[InvariantResult]
    liveness: list[LivenessResult]


@dataclass
class MachineReport:
    """What exploring one machine found: its size, how long it took, every invariant."""

    states: int
    transitions: int
    seconds: float
    invariants: list[InvariantResult]
    liveness: list[LivenessResult]

    @property
    def ok(self) -> bool:
        return all(result.holds for result in self.invariants) and all(result.holds for result in self.liveness)

    def violations(self) -> list[InvariantResult | LivenessResult]:
        broken: list[InvariantResult | LivenessResult] = [result for result in self.invariants if not result.holds]
        return broken + [result for result in self.liveness if not result.holds]

    def as_dict(self) -> dict[str, object]:
        return {
            "states": self.states,
            "transitions": self.transitions,
            "seconds": round(self.seconds, 6),
            "invariants": [result.as_dict() for result in self.invariants],
            "liveness": [result.as_dict() for result in self.liveness],
        }


def timed_check(spec: MachineSpec[S, E, T]) -> MachineReport:
    started = time.perf_counter()
    run = check_machine(spec)
    return MachineReport(run.states, run.transitions, time.perf_counter() - started, run.invariants, run.liveness)


def check_machine(spec: MachineSpec[S, E, T]) -> CheckRun:
    results: dict[str, InvariantResult] = {}
    for named in [*_names(spec.state_invariants), *_names(spec.step_invariants)]:
        results.setdefault(named[1], InvariantResult(*named))
    well_formed = InvariantResult(*spec.well_formed)
    can_finish = InvariantResult(*spec.can_finish)
    walk: Walk[S, E] = Walk(spec.initial)

    def path(state: S, *then: E) -> list[str]:
        return [spec.event_name(ev) for ev in (*walk.path_to(state), *then)]

    def admit(state: S) -> bool:
        broken = [inv for inv in spec.state_invariants if not inv.holds(state)]
        for inv in broken:
            results[inv.name].fail(path(state), f"reaches {spec.describe_state(state)}")
        if broken and spec.stop_at_first_violation:
            raise _Stopped
        return spec.explore_past_violations or not broken

    def expand(state: S) -> Iterator[tuple[E, S, bool]]:
        for ev in spec.events:
            try:
                taken = spec.step(state, ev)
            except spec.forbidden:
                continue
            except spec.malformed as error:
                well_formed.fail(path(state, ev), str(error))
                if spec.stop_at_first_violation:
                    raise _Stopped from None
                continue
            broken = [inv for inv in spec.step_invariants if not inv.holds(taken)]
            for inv in broken:
                results[inv.name].fail(path(state, ev), spec.describe_step(taken))
            if broken and spec.stop_at_first_violation:
                raise _Stopped
            yield ev, spec.after(taken), spec.explore_past_violations or not broken

    try:
        walk.run(expand, admit, spec.max_states)
    except StateSpaceTooLarge as error:
        well_formed.fail(path(next(reversed(walk.parent))), str(error))
    except _Stopped:
        return CheckRun(len(walk.parent), walk.transitions, [*results.values(), well_formed, can_finish], [])
    stuck = walk.first_stuck(spec.finished)
    if stuck is not None:
        can_finish.fail(path(stuck), f"nothing finishes from {spec.describe_state(stuck)}")
    liveness = [check_liveness(walk.edges, spec.initial, prop, spec.event_name) for prop in spec.liveness]
    return CheckRun(len(walk.parent), walk.transitions, [*results.values(), well_formed, can_finish], liveness)
