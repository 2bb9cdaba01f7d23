"""Exploring a decode request together with its KV transfer (:mod:`..disagg`) to a fixpoint.

Every request invariant is checked on the request inside each composed state
and step, and the composition's own invariants and liveness properties on
the whole; the walk, the counterexamples and the lassos are those of every
other machine (:mod:`.checking`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo_backend_protocol.model.disagg import (
    DISAGG_LIVENESS,
    DISAGG_STATE_INVARIANTS,
    DisaggEvent,
    DisaggState,
    DisaggStep,
    TransferEvent,
    disagg_step,
    initial_disagg_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import MachineReport, MachineSpec, timed_check
from dynamo_backend_protocol.model.faults import FAULT_INVARIANTS
from dynamo_backend_protocol.model.invariants import (
    DONE_REACHABLE,
    STATE_INVARIANTS,
    STEP_INVARIANTS,
    TABLE_WELL_FORMED,
    Invariant,
    StateInvariant,
    StepInvariant,
)
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ControlState

DISAGG_EVENTS: tuple[DisaggEvent, ...] = (*ALL_EVENTS, *TransferEvent)


@dataclass
class DisaggReport(MachineReport):
    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, **super().as_dict()}


def _on_request(inv: StateInvariant) -> Invariant[DisaggState]:
    return Invariant(inv.rule, inv.name, lambda state: inv.holds(state.request))


def _on_request_step(inv: StepInvariant) -> Invariant[DisaggStep]:
    return Invariant(inv.rule, inv.name, lambda step: step.request_step is None or inv.holds(step.request_step))


def _name(ev: DisaggEvent) -> str:
    return ev.value if isinstance(ev, TransferEvent) else ev.name


def _describe(step: DisaggStep) -> str:
    actions = [action.value for action in step.actions]
    return f"{_name(step.event)} in {step.before.describe()} -> {step.after.describe()} / {actions}"


def explore_disagg(
    table: CompiledTable = DEFAULT_TABLE, explore_past_violations: bool = False, liveness: bool = True
) -> DisaggReport:
    """Breadth-first over a decode request and its transfer; the first counterexample is a shortest one.
    Then (unless ``liveness`` is off) every liveness property of the composition under its fairness."""
    report = timed_check(
        MachineSpec(
            initial=initial_disagg_state(table),
            events=DISAGG_EVENTS,
            step=lambda state, ev: disagg_step(table, state, ev),
            after=lambda step: step.after,
            event_name=_name,
            describe_state=DisaggState.describe,
            describe_step=_describe,
            state_invariants=[*map(_on_request, (*STATE_INVARIANTS, *FAULT_INVARIANTS)), *DISAGG_STATE_INVARIANTS],
            step_invariants=[*map(_on_request_step, STEP_INVARIANTS)],
            forbidden=(ProtocolViolation, NotEnabled),
            malformed=(TableError,),
            well_formed=(TABLE_WELL_FORMED, "table_is_deterministic_and_complete"),
            finished=lambda state: state.request.control is ControlState.DONE,
            can_finish=(DONE_REACHABLE, "done_reachable_from_every_state"),
            liveness=DISAGG_LIVENESS if liveness else (),
            explore_past_violations=explore_past_violations,
        )
    )
    return DisaggReport(report.states, report.transitions, report.seconds, report.invariants, report.liveness)
