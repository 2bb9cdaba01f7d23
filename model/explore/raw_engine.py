"""Exploring the raw engine adapter's machine (:mod:`..raw_engine`) to a fixpoint.

The walk, the counterexamples and the "can every state still finish" check
are those of every other machine (:mod:`.checking`).  The only thing the raw
machine adds is its state abstraction: the count of forwarded objects is
capped, so the graph is finite (no rule reads past the first few objects).
Read by ``check --machine raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import MachineReport, MachineSpec, timed_check
from dynamo_backend_protocol.model.invariants import DONE_REACHABLE, TABLE_WELL_FORMED
from dynamo_backend_protocol.model.raw_engine import (
    RAW_STATE_INVARIANTS,
    RAW_STEP_INVARIANTS,
    RAW_TABLE,
    RawEvent,
    RawPhase,
    RawState,
    RawStep,
    RawTransition,
    raw_table,
)


@dataclass
class RawReport(MachineReport):
    """What exploring the raw machine found; its ``transitions`` are the steps taken."""

    @property
    def done_reachable(self) -> bool:
        return all(result.holds for result in self.invariants if result.rule == DONE_REACHABLE)


def _describe_step(step: RawStep) -> str:
    actions = [action.value for action in step.actions]
    return f"{step.event.value} in {step.before.describe()} -> {step.after.describe()} / {actions}"


def explore_raw(table: tuple[RawTransition, ...] = RAW_TABLE, depth: int = 2) -> RawReport:
    """Breadth-first over every event in every reachable state, forwarded objects counted up to
    ``depth``: each step is judged by the step invariants, each state by the state invariants, states
    past a violation are explored too, and Done must be reachable from every state.  ``table`` is
    replaceable so tests can check that a faulty one is caught."""
    machine = raw_table(table)
    report = timed_check(
        MachineSpec(
            initial=RawState(),
            events=tuple(RawEvent),
            step=machine.step,
            after=lambda step: replace(step.after, forwarded=min(step.after.forwarded, depth)),
            event_name=machine.event_name,
            describe_state=RawState.describe,
            describe_step=_describe_step,
            state_invariants=RAW_STATE_INVARIANTS,
            step_invariants=RAW_STEP_INVARIANTS,
            forbidden=(ProtocolViolation,),
            malformed=(TableError,),
            well_formed=(TABLE_WELL_FORMED, "raw_table_is_deterministic_and_complete"),
            finished=lambda state: state.phase is RawPhase.DONE,
            can_finish=(DONE_REACHABLE, "raw_done_reachable_from_every_state"),
            explore_past_violations=True,
        )
    )
    return RawReport(report.states, report.transitions, report.seconds, report.invariants, report.liveness)
