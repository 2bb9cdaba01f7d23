"""Exporting one mode of the request table as a Promela model, for SPIN.

Generated, never written by hand (:mod:`.promela_parts`): every row of the
table becomes one guarded command per event it can fire on, and its updates
follow the machine's rules for effects and derived variables.  Guards,
state invariants, the step invariants' monitors and the liveness
properties' triggers and goals are Python predicates tabulated on every
combination of the state's fields.  SPIN then does its own exploration: it
never sees our reachable states.

What SPIN checks: every state invariant (the fault invariants too), as
``[] p``; every step invariant, as ``[] !broke_<name>`` over its monitor
flag; every liveness property, as LTL whose antecedent states the
property's weak fairness (``<>[] enabled -> []<> taken`` for each class, as
``[]<> (!enabled || taken)``).  With the KV transfer the composition's own
invariant and liveness properties are added.  Not checked by SPIN:
TABLE-WELL-FORMED (a table with two rows for one step is, to SPIN, a choice)
and DONE-REACHABLE (from every state *some* run ends: a branching-time
property, which LTL cannot state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dynamo_backend_protocol.model.disagg import (
    ABORT_ORPHANS,
    DISAGG_LIVENESS,
    DISAGG_STATE_INVARIANTS,
    FIRST_TOKEN_NEEDS,
    DisaggEvent,
    DisaggState,
    TransferEvent,
    TransferPhase,
    TransferRow,
)
from dynamo_backend_protocol.model.disagg import TRANSFER as TRANSFER_MACHINE
from dynamo_backend_protocol.model.explore.promela_parts import (
    REQUEST_FIELDS,
    Command,
    Field,
    Guarded,
    all_of,
    any_of,
    atoms_inline,
    expression,
    fairness_atom,
    fairness_rounds,
    identifier,
    liveness_claim,
    liveness_claim_name,
    phase_commands,
    request_commands,
    request_event_code,
    request_state,
    request_updates,
    safety_conjunction,
    step_loop,
    tabulated,
)
from dynamo_backend_protocol.model.faults import FAULT_INVARIANTS
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS, Invariant
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES, Fairness, LivenessProperty
from dynamo_backend_protocol.model.machine import CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ActionKind, Event, Mode

REQUEST_STATE_INVARIANTS: tuple[Invariant[RequestState], ...] = (*STATE_INVARIANTS, *FAULT_INVARIANTS)
"""Every state invariant the request explorer checks, hence every one the export states."""

TRANSFER = Field("transfer", tuple(TransferPhase))


def _composed_expression(mode: Mode, predicate: Callable[[DisaggState], bool]) -> str:
    """A predicate on a request with its KV transfer, over the request's fields and the transfer's phase."""

    def subject(values: dict[str, object]) -> bool:
        transfer = values.pop("transfer")
        return predicate(DisaggState(request_state(mode, values), transfer))  # type: ignore[arg-type]

    return tabulated((*REQUEST_FIELDS, TRANSFER), subject, {})


def _request_command(command: Command, with_transfer: bool) -> Guarded[DisaggEvent]:
    """A request command; inside the composition a first-token signal waits for the completed
    transfer, and an abort while the transfer is in flight orphans it (see model/disagg.py)."""
    enabled, updates = command.enabled(), request_updates(command)
    if with_transfer and command.event.signals_first_token:
        enabled = all_of([enabled, f"transfer == {TRANSFER.code(FIRST_TOKEN_NEEDS)}"])
    if with_transfer and ActionKind.CALL_ABORT in command.row.actions:
        orphaning = any_of([f"transfer == {TRANSFER.code(phase)}" for phase in sorted(ABORT_ORPHANS, key=str)])
        orphaned = TRANSFER.code(TransferPhase.ORPHANED)
        updates = [*updates, f"if :: {orphaning} -> transfer = {orphaned} :: else -> skip fi"]
    steps = (*command.monitor_lines(), *updates)
    comment = f"{command.event.name}: {command.row.rule}"
    event: DisaggEvent = command.event
    return Guarded(enabled, request_event_code(command.event), event, steps, comment)


def _transfer_commands(mode: Mode) -> list[Guarded[DisaggEvent]]:
    """The KV transfer's rows as guarded commands over its phase and the request's fields (its guard
    reads whether the request's stream exists)."""
    found: list[Guarded[DisaggEvent]] = []

    def state_of(values: dict[str, object]) -> DisaggState:
        request = {name: value for name, value in values.items() if name != TRANSFER.name}
        return DisaggState(request_state(mode, request), values[TRANSFER.name])  # type: ignore[arg-type]

    for command in phase_commands(TRANSFER_MACHINE, (TRANSFER, *REQUEST_FIELDS), state_of, _no_other_updates):
        code = len(ALL_EVENTS) + list(TransferEvent).index(command.event)
        index = TRANSFER_MACHINE.rows.index(command.row)
        event: DisaggEvent = command.event
        comment = f"{command.event.value}, transfer row {index}"
        found.append(Guarded(command.enabled(), code, event, tuple(command.steps()), comment))
    return found


def _no_other_updates(row: TransferRow, event: TransferEvent) -> list[str]:
    """The transfer's phase is all it has."""
    return []


def export_promela(mode: Mode, table: CompiledTable, with_transfer: bool = False) -> str:
    """The Promela model of ``table`` in ``mode``, with one ``ltl`` claim per property; with
    ``with_transfer``, the decode request composed with its KV transfer (:mod:`..disagg`)."""
    what = "a decode request and its KV transfer" if with_transfer else f"mode {mode.value}"
    header = f"/* Generated from the tables by dynamo-backend-protocol: {what}. Do not edit. */"
    return f"{header}\n{promela_body(mode, table, with_transfer)}"


def claims(with_transfer: bool = False) -> list[tuple[str, str, str]]:
    """(rule, property name, ltl claim name) of every property the export states."""
    invariants: list[Invariant[RequestState] | Invariant[Step]] = [*REQUEST_STATE_INVARIANTS, *STEP_INVARIANTS]
    found = [(inv.rule, inv.name, inv.name) for inv in invariants]
    if with_transfer:
        found += [(inv.rule, inv.name, inv.name) for inv in DISAGG_STATE_INVARIANTS]
        return found + [(prop.rule, prop.name, liveness_claim_name(prop)) for prop in DISAGG_LIVENESS]
    return found + [(prop.rule, prop.name, liveness_claim_name(prop)) for prop in LIVENESS_PROPERTIES]


def promela_body(mode: Mode, table: CompiledTable, with_transfer: bool = False) -> str:
    """The model without its header, so modes that export the same model compare equal.

    Each proposition the claims use is a boolean variable recomputed after
    every step (SPIN translates claims over short atoms quickly; over long
    expressions, slowly); its initial value is the same expression on the
    initial state."""
    return _body(mode, table, with_transfer)


def _body(mode: Mode, table: CompiledTable, with_transfer: bool) -> str:
    initial = table.initial(mode)
    start = DisaggState(initial)
    commands: list[Guarded[DisaggEvent]] = [
        _request_command(command, with_transfer) for command in request_commands(table, mode)
    ]
    if with_transfer:
        commands += _transfer_commands(mode)
    atoms: list[tuple[str, str, bool]] = []
    """(variable, expression, value in the initial state)."""
    for inv in REQUEST_STATE_INVARIANTS:
        atoms.append((f"inv_{inv.name}", expression(mode, inv.holds, {}), inv.holds(initial)))
    properties: Sequence[LivenessProperty[DisaggState, DisaggEvent]]
    if with_transfer:
        for composed in DISAGG_STATE_INVARIANTS:
            atoms.append((f"inv_{composed.name}", _composed_expression(mode, composed.holds), composed.holds(start)))
        properties = DISAGG_LIVENESS
    else:
        properties = [_as_composed(prop) for prop in LIVENESS_PROPERTIES]
    fairness_used: dict[str, Fairness[DisaggEvent]] = {}
    for prop in properties:
        name = liveness_claim_name(prop)
        atoms.append((f"trigger_{name}", _composed_expression(mode, prop.trigger), prop.trigger(start)))
        atoms.append((f"goal_{name}", _composed_expression(mode, prop.goal), prop.goal(start)))
        for fairness in prop.fairness:
            fairness_used[identifier(fairness.name)] = fairness
    for name, fairness in fairness_used.items():
        # The initial state occurs once, so its value never decides "infinitely often".
        atoms.append((f"fair_{name}", fairness_atom(commands, fairness), False))
    rounds = [fairness_rounds(prop) for prop in properties]
    monitors = [inv.name for inv in STEP_INVARIANTS]
    state_invariants = [*REQUEST_STATE_INVARIANTS, *(DISAGG_STATE_INVARIANTS if with_transfer else ())]
    propositions = [*(f"inv_{inv.name}" for inv in state_invariants), *(f"!broke_{name}" for name in monitors)]
    conjunction = safety_conjunction(propositions)
    lines = [
        *(f"byte {field.name} = {field.code(getattr(initial, field.name))};" for field in REQUEST_FIELDS),
        *(["byte transfer = 0;"] if with_transfer else []),
        "byte last = 255;",
        "bool dead = 0;",
        *(f"bool broke_{name} = 0;" for name in monitors),
        *(f"bool {variable} = {int(value)};" for variable, _, value in atoms),
        *(declaration for declarations, _ in rounds for declaration in declarations),
        "",
        conjunction[0],
        "",
        *atoms_inline(
            [*(f"{v} = {text}" for v, text, _ in atoms), *(s for _, ss in rounds for s in ss), conjunction[1]]
        ),
        "",
        "active proctype request() {",
        *step_loop(commands),
        "}",
        "",
    ]
    lines += [f"ltl {inv.name} {{ [] inv_{inv.name} }}" for inv in state_invariants]
    lines += [f"ltl {name} {{ [] !broke_{name} }}" for name in monitors]
    lines.append(conjunction[2])
    lines += [liveness_claim(prop) for prop in properties]
    return "\n".join(lines) + "\n"


def _as_composed(prop: LivenessProperty[RequestState, Event]) -> LivenessProperty[DisaggState, DisaggEvent]:
    """A one-request property read through a composed state whose transfer never moves."""
    return LivenessProperty(
        prop.rule,
        prop.name,
        lambda state: prop.trigger(state.request),
        lambda state: prop.goal(state.request),
        tuple(
            Fairness(f.name, f.assumes, lambda ev, f=f: isinstance(ev, Event) and f.covers(ev))  # type: ignore[misc]
            for f in prop.fairness
        ),
    )
