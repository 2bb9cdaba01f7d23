"""Exploring the engine lifecycle machine of :mod:`..lifecycle` to a fixpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import MachineReport, MachineSpec, timed_check
from dynamo_backend_protocol.model.lifecycle import (
    CLEANUP_AFTER_START,
    CLEANUP_REACHABLE,
    LIFECYCLE_STATE_INVARIANTS,
    LIFECYCLE_STEP_INVARIANTS,
    LIFECYCLE_TABLE_WELL_FORMED,
    LifecycleEvent,
    LifecycleState,
    LifecycleStep,
    Phase,
    lifecycle_step,
)


@dataclass
class LifecycleReport(MachineReport):
    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, **super().as_dict()}


_Step = Callable[[LifecycleState, LifecycleEvent], LifecycleStep]


def explore_lifecycle(step: _Step = lifecycle_step) -> LifecycleReport:
    """Breadth-first from a constructed engine over every event until no new state appears.

    Every invariant is checked on every reachable state and step; the first
    counterexample found for each is a shortest one.  ``step`` is replaceable
    so tests can check that a faulty table is caught.
    """
    report = timed_check(
        MachineSpec(
            initial=LifecycleState(),
            events=tuple(LifecycleEvent),
            step=step,
            after=lambda taken: taken.after,
            event_name=lambda event: event.value,
            describe_state=LifecycleState.describe,
            describe_step=lambda taken: f"{taken.event.value} in {taken.before.describe()} -> {taken.after.describe()}",
            state_invariants=LIFECYCLE_STATE_INVARIANTS,
            step_invariants=LIFECYCLE_STEP_INVARIANTS,
            forbidden=(ProtocolViolation,),
            malformed=(TableError,),
            well_formed=(LIFECYCLE_TABLE_WELL_FORMED, "lifecycle_table_is_deterministic_and_complete"),
            finished=lambda state: state.phase is Phase.CLEANED_UP,
            can_finish=(CLEANUP_AFTER_START, CLEANUP_REACHABLE),
        )
    )
    return LifecycleReport(report.states, report.transitions, report.seconds, report.invariants, report.liveness)
