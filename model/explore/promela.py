"""Exporting one mode of the request table as a Promela model, for SPIN.

Generated, never written by hand: every row of the table becomes one guarded
command per event it can fire on, and its updates follow the machine's rules
for effects and derived variables.  Guards, state invariants and the
liveness properties' triggers and goals are Python predicates; each is
turned into a Promela expression by evaluating it on every combination of
the state's fields, keeping only the fields it depends on.  SPIN then does
its own exploration: it never sees our reachable states.

What SPIN checks: every state invariant, as ``[] p``, and every liveness
property, as LTL whose antecedent states the property's weak fairness
(``<>[] enabled -> []<> taken`` for each class, as ``[]<> (!enabled || taken)``).  Step invariants, the
table's well-formedness and DONE-REACHABLE have no Promela form here.

The abort count saturates at 3 in the export (a fourth abort is still 3):
no invariant tells 3 from more.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model.disagg import (
    ABORT_ORPHANS,
    DISAGG_STATE_INVARIANTS,
    FIRST_TOKEN_NEEDS,
    TRANSFER_TABLE,
    DisaggState,
    TransferEvent,
    TransferPhase,
)
from dynamo_backend_protocol.model.invariants import LIVE, STATE_INVARIANTS
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES, Fairness, RequestLiveness
from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import Effect, Transition
from dynamo_backend_protocol.model.vocabulary import (
    ALL_EVENTS,
    FORWARDS,
    ActionKind,
    CancelCause,
    ControlState,
    Event,
    EventKind,
    Mode,
    StreamEnd,
)

_CONTROLS = tuple(ControlState)
_CANCELS: tuple[CancelCause | None, ...] = (None, *CancelCause)
_ENDS: tuple[StreamEnd | None, ...] = (None, *StreamEnd)
MAX_ABORTS = 3


@dataclass(frozen=True)
class _Field:
    name: str
    values: tuple[object, ...]

    def code(self, value: object) -> int:
        return self.values.index(value)


_FIELDS = (
    _Field("control", _CONTROLS),
    _Field("first_token", (False, True)),
    _Field("cancel", _CANCELS),
    _Field("aborts", tuple(range(MAX_ABORTS + 1))),
    _Field("ended", _ENDS),
    _Field("watching", (False, True)),
    _Field("forwarded", (False, True)),
)
_BY_NAME = {field.name: field for field in _FIELDS}


def _state(mode: Mode, values: dict[str, object]) -> RequestState:
    return RequestState(mode=mode, **values)  # type: ignore[arg-type]


def _expression(mode: Mode, predicate: Callable[[RequestState], bool], fixed: dict[str, object]) -> str:
    """``predicate`` as a Promela expression over the fields it depends on (``fixed`` ones excluded)."""
    return _tabulated(_FIELDS, lambda values: predicate(_state(mode, values)), fixed)


_TRANSFER = _Field("transfer", tuple(TransferPhase))


def _composed_expression(mode: Mode, predicate: Callable[[DisaggState], bool]) -> str:
    """A predicate on a request with its KV transfer, over the request's fields and the transfer's phase."""

    def subject(values: dict[str, object]) -> bool:
        transfer = values.pop("transfer")
        return predicate(DisaggState(_state(mode, values), transfer))  # type: ignore[arg-type]

    return _tabulated((*_FIELDS, _TRANSFER), subject, {})


def _tabulated(
    fields: Sequence[_Field], predicate: Callable[[dict[str, object]], bool], fixed: dict[str, object]
) -> str:
    free = [field for field in fields if field.name not in fixed]
    table: dict[tuple[object, ...], bool] = {}
    for combo in itertools.product(*(field.values for field in free)):
        values = dict(zip((field.name for field in free), combo, strict=True)) | fixed
        table[combo] = bool(predicate(values))
    results = set(table.values())
    if len(results) == 1:
        return "true" if results == {True} else "false"
    relevant = [index for index in range(len(free)) if _depends(table, index)]
    projected = {tuple(combo[i] for i in relevant): result for combo, result in table.items()}
    fields = [free[i] for i in relevant]
    true_terms = [combo for combo, result in projected.items() if result]
    false_terms = [combo for combo, result in projected.items() if not result]
    if len(true_terms) <= len(false_terms):
        return _disjunction(fields, true_terms)
    return f"!{_disjunction(fields, false_terms)}"


def _depends(table: dict[tuple[object, ...], bool], index: int) -> bool:
    seen: dict[tuple[object, ...], bool] = {}
    for combo, result in table.items():
        rest = combo[:index] + combo[index + 1 :]
        if seen.setdefault(rest, result) != result:
            return True
    return False


def _disjunction(fields: Sequence[_Field], terms: Sequence[tuple[object, ...]]) -> str:
    def clause(term: tuple[object, ...]) -> str:
        tests = (f"{field.name} == {field.code(value)}" for field, value in zip(fields, term, strict=True))
        return "(" + " && ".join(tests) + ")"

    clauses = [clause(term) for term in terms]
    return "(" + " || ".join(clauses) + ")"


@dataclass(frozen=True)
class _Command:
    source: ControlState
    event: Event
    row: Transition
    guard: str

    def enabled(self) -> str:
        return f"(control == {_CONTROLS.index(self.source)} && {self.guard})"


def _commands(table: CompiledTable, mode: Mode) -> list[_Command]:
    commands: list[_Command] = []
    for row in table.table:
        for source in row.sources:
            for ev in ALL_EVENTS:
                if ev.kind is not row.trigger:
                    continue
                guard = _expression(mode, _bound(row, ev), {"control": source})
                if guard != "false":
                    commands.append(_Command(source, ev, row, guard))
    return commands


def _bound(row: Transition, ev: Event) -> Callable[[RequestState], bool]:
    return lambda state: row.guard(state, ev)


_CANCEL_CODE = {EventKind.STOP: _CANCELS.index(CancelCause.STOP), EventKind.KILL: _CANCELS.index(CancelCause.KILL)}


def _updates(command: _Command) -> list[str]:
    """The step's effect on the variables, in the machine's order (see machine._apply)."""
    row, ev = command.row, command.event
    if row.ignored:
        return []
    lines: list[str] = []
    if row.target is not None:
        lines.append(f"control = {_CONTROLS.index(row.target)}")
    if Effect.START_WATCH in row.effects:
        lines.append("watching = 1")
    if Effect.NOTE_FIRST_TOKEN in row.effects and ev.signals_first_token:
        lines.append("first_token = 1")
    if Effect.RECORD_CANCEL in row.effects and ev.kind in _CANCEL_CODE:
        lines.append(f"if :: cancel == 0 -> cancel = {_CANCEL_CODE[ev.kind]} :: else -> skip fi")
    if row.ends is not None:
        lines.append(f"if :: ended == 0 -> ended = {_ENDS.index(StreamEnd(row.ends))} :: else -> skip fi")
    for _ in range(row.actions.count(ActionKind.CALL_ABORT)):
        lines.append(f"if :: aborts < {MAX_ABORTS} -> aborts++ :: else -> skip fi")
    if any(action in FORWARDS for action in row.actions):
        lines.append("forwarded = 1")
    if ActionKind.RELEASE_WATCH in row.actions:
        lines.append("watching = 0")
    return lines


def _synchronised(command: _Command, enabled: str, updates: list[str]) -> tuple[str, list[str]]:
    """A request command inside the composition: a first-token signal waits for the completed
    transfer, and an abort while the transfer is in flight orphans it (see model/disagg.py)."""
    if command.event.signals_first_token:
        enabled = f"({enabled} && transfer == {_TRANSFER.code(FIRST_TOKEN_NEEDS)})"
    if ActionKind.CALL_ABORT in command.row.actions:
        orphaning = " || ".join(f"transfer == {_TRANSFER.code(phase)}" for phase in sorted(ABORT_ORPHANS, key=str))
        orphaned = _TRANSFER.code(TransferPhase.ORPHANED)
        updates = [*updates, f"if :: {orphaning} -> transfer = {orphaned} :: else -> skip fi"]
    return enabled, updates


def _transfer_commands() -> list[str]:
    live = " || ".join(f"control == {_CONTROLS.index(state)}" for state in _CONTROLS if state in LIVE)
    lines = []
    for index, row in enumerate(TRANSFER_TABLE):
        enabled = f"transfer == {_TRANSFER.code(row.source)}"
        if row.needs_live_request:
            enabled = f"({enabled} && ({live}))"
        event = len(ALL_EVENTS) + list(TransferEvent).index(row.event)
        steps = f"last = {event}; transfer = {_TRANSFER.code(row.target)}; atoms()"
        lines.append(f"  :: atomic {{ {enabled} -> {steps} }}  /* {row.event.value}, transfer row {index} */")
    return lines


def _identifier(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def _fairness_terms(commands: list[_Command], fairness: Fairness[Event]) -> tuple[str, str]:
    enabled = [command.enabled() for command in commands if fairness.covers(command.event)]
    taken = sorted({ALL_EVENTS.index(command.event) for command in commands if fairness.covers(command.event)})
    return (
        "(" + (" || ".join(enabled) or "false") + ")",
        "(" + (" || ".join(f"last == {index}" for index in taken) or "false") + ")",
    )


def liveness_claim_name(prop: RequestLiveness) -> str:
    return _identifier(prop.name)


def export_promela(mode: Mode, table: CompiledTable, with_transfer: bool = False) -> str:
    """The Promela model of ``table`` in ``mode``, with one ``ltl`` claim per property; with
    ``with_transfer``, the decode request composed with its KV transfer (:mod:`..disagg`)."""
    what = "a decode request and its KV transfer" if with_transfer else f"mode {mode.value}"
    header = f"/* Generated from the tables by dynamo-backend-protocol: {what}. Do not edit. */"
    return f"{header}\n{promela_body(mode, table, with_transfer)}"


def claims(with_transfer: bool = False) -> list[tuple[str, str, str]]:
    """(rule, property name, ltl claim name) of every property the export states."""
    found = [(inv.rule, inv.name, inv.name) for inv in STATE_INVARIANTS]
    if with_transfer:
        return found + [(inv.rule, inv.name, inv.name) for inv in DISAGG_STATE_INVARIANTS]
    return found + [(prop.rule, prop.name, liveness_claim_name(prop)) for prop in LIVENESS_PROPERTIES]


def promela_body(mode: Mode, table: CompiledTable, with_transfer: bool = False) -> str:
    """The model without its header, so modes that export the same model compare equal.

    Each proposition the claims use is a boolean variable recomputed after
    every step (SPIN translates claims over short atoms quickly; over long
    expressions, slowly); its initial value is the same expression on the
    initial state."""
    commands = _commands(table, mode)
    initial = table.initial(mode)
    atoms: list[tuple[str, str, bool]] = []
    """(variable, expression, value in the initial state)."""
    for inv in STATE_INVARIANTS:
        atoms.append((f"inv_{inv.name}", _expression(mode, inv.holds, {}), inv.holds(initial)))
    if with_transfer:
        start = DisaggState(initial)
        for composed in DISAGG_STATE_INVARIANTS:
            atoms.append((f"inv_{composed.name}", _composed_expression(mode, composed.holds), composed.holds(start)))
    # The composition is checked for safety only (as explore_disagg does).
    liveness = () if with_transfer else LIVENESS_PROPERTIES
    fairness_used: dict[str, Fairness[Event]] = {}
    for prop in liveness:
        name = liveness_claim_name(prop)
        atoms.append((f"trigger_{name}", _expression(mode, prop.trigger, {}), prop.trigger(initial)))
        atoms.append((f"goal_{name}", _expression(mode, prop.goal, {}), prop.goal(initial)))
        for fairness in prop.fairness:
            fairness_used[_identifier(fairness.name)] = fairness
    for name, fairness in fairness_used.items():
        enabled, taken = _fairness_terms(commands, fairness)
        # Nothing has been taken in the initial state; whether the class is enabled there decides.
        enabled_at_start = any(
            fairness.covers(c.event) and c.source is initial.control and c.row.guard(initial, c.event) for c in commands
        )
        atoms.append((f"fair_{name}", f"(!{enabled} || {taken})", not enabled_at_start))
    lines = [
        *(f"byte {field.name} = {field.code(getattr(initial, field.name))};" for field in _FIELDS),
        *(["byte transfer = 0;"] if with_transfer else []),
        "byte last = 255;",
        "bool dead = 0;",
        *(f"bool {variable} = {int(value)};" for variable, _, value in atoms),
        "",
        "inline atoms() {",
        *(f"  {variable} = {expression};" for variable, expression, _ in atoms),
        "}",
        "",
        "active proctype request() {",
        "  do",
    ]
    for command in commands:
        enabled, updates = command.enabled(), _updates(command)
        if with_transfer:
            enabled, updates = _synchronised(command, enabled, updates)
        steps = "; ".join([f"last = {ALL_EVENTS.index(command.event)}", *updates, "atoms()"])
        comment = f"/* {command.event.name}: {command.row.rule} */"
        lines.append(f"  :: atomic {{ {enabled} -> {steps} }}  {comment}")
    if with_transfer:
        lines.extend(_transfer_commands())
    lines += ["  :: else -> dead = 1; break", "  od", "}", ""]
    for inv in (*STATE_INVARIANTS, *(DISAGG_STATE_INVARIANTS if with_transfer else ())):
        lines.append(f"ltl {inv.name} {{ [] inv_{inv.name} }}")
    for prop in liveness:
        name = liveness_claim_name(prop)
        # Weak fairness <>[]enabled -> []<>taken, written as the equivalent []<>(!enabled || taken):
        # the generalised Büchi form keeps SPIN's translation of the claim small.
        fair = [f"[]<> fair_{_identifier(f.name)}" for f in prop.fairness]
        antecedent = " && ".join([*fair, "[] !dead"])
        lines.append(f"ltl {name} {{ ({antecedent}) -> [] (trigger_{name} -> <> goal_{name}) }}")
    return "\n".join(lines) + "\n"
