"""An explicit-state model checker for the request machine.

Breadth-first from the initial state over every event, per mode, until no new
state appears.  Every invariant is checked on every reachable state and every
transition; because the search is breadth-first, the first counterexample
found for an invariant is a shortest one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import MachineReport, MachineSpec, timed_check
from dynamo_backend_protocol.model.faults import FAULT_INVARIANTS
from dynamo_backend_protocol.model.invariants import (
    DONE_REACHABLE,
    STATE_INVARIANTS,
    STEP_INVARIANTS,
    TABLE_WELL_FORMED,
)
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ControlState, Mode

MAX_STATES = 100_000
"""A faulty table could grow a counter forever; past this the search gives up."""


@dataclass
class ModeReport(MachineReport):
    mode: Mode = Mode.AGGREGATED


@dataclass
class ExplorationReport:
    modes: dict[Mode, ModeReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.modes.values())

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "modes": {m.value: r.as_dict() for m, r in self.modes.items()}}


def explore(
    mode: Mode,
    table: CompiledTable = DEFAULT_TABLE,
    liveness: bool = True,
    stop_at_first_violation: bool = False,
    explore_past_violations: bool = False,
) -> ModeReport:
    """Every invariant on every reachable state and step of ``mode``, then (unless
    ``liveness`` is off) every liveness property under its fairness."""
    report = timed_check(
        MachineSpec(
            initial=table.initial(mode),
            events=ALL_EVENTS,
            step=table.step,
            after=lambda step: step.after,
            event_name=lambda ev: ev.name,
            describe_state=RequestState.describe,
            describe_step=_describe_step,
            state_invariants=(*STATE_INVARIANTS, *FAULT_INVARIANTS),
            step_invariants=STEP_INVARIANTS,
            forbidden=(ProtocolViolation,),
            malformed=(TableError,),
            well_formed=(TABLE_WELL_FORMED, "table_is_deterministic_and_complete"),
            finished=lambda state: state.control is ControlState.DONE,
            can_finish=(DONE_REACHABLE, "done_reachable_from_every_state"),
            liveness=LIVENESS_PROPERTIES if liveness else (),
            max_states=MAX_STATES,
            stop_at_first_violation=stop_at_first_violation,
            explore_past_violations=explore_past_violations,
        )
    )
    return ModeReport(report.states, report.transitions, report.seconds, report.invariants, report.liveness, mode)


def _describe_step(step: Step) -> str:
    return (
        f"{step.event.name} in {step.before.describe()} -> "
        f"{step.after.describe()} / {[a.value for a in step.actions]}"
    )


def explore_all(modes: Iterable[Mode] = tuple(Mode), table: CompiledTable = DEFAULT_TABLE) -> ExplorationReport:
    report = ExplorationReport()
    for mode in modes:
        report.modes[mode] = explore(mode, table)
    return report
