"""Exporting the raw engine adapter's table as a Promela model, for SPIN.

Generated from :data:`..raw_engine.RAW_TABLE`, never written by hand, by the
writer of every phase table (:func:`.promela_parts.phase_commands`): each row
becomes one guarded atomic step per source phase, its guard tabulated over
the state's fields (phase, cancelled, aborts and forwarded objects, the
counts saturating at 2 so a faulty table that aborts twice still shows),
setting the fields as the table's ``apply`` does and each step invariant's
monitor flag.  SPIN explores from Idle on its own.  It checks every state
invariant as ``[] p`` (``p`` tabulated) and every step invariant as
``[] !broke_<name>``.  Not checked by SPIN: that Done is reachable from every
state (branching time, which LTL cannot state); the explorer checks it.
"""

from __future__ import annotations

import functools

from dynamo_backend_protocol.model.explore.promela_parts import Field, phase_commands, tabulated
from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.raw_engine import (
    CANCELS,
    RAW_STATE_INVARIANTS,
    RAW_STEP_INVARIANTS,
    RAW_TABLE,
    RawAction,
    RawEvent,
    RawPhase,
    RawState,
    RawTransition,
    raw_table,
)

COUNT_CAP = 2
"""Aborts and forwarded objects are counted up to this (saturating): enough to see a second abort."""
_PHASES = tuple(RawPhase)
_EVENTS = tuple(RawEvent)
RAW_FIELDS = (
    Field("phase", _PHASES),
    Field("cancelled", (False, True)),
    Field("aborts", tuple(range(COUNT_CAP + 1))),
    Field("forwarded", tuple(range(COUNT_CAP + 1))),
)


def _state(values: dict[str, object]) -> RawState:
    return RawState(**values)  # type: ignore[arg-type]


def _holds(invariant: Invariant[RawState], values: dict[str, object]) -> bool:
    return invariant.holds(_state(values))


def _saturating(name: str) -> str:
    return f"if :: {name} < {COUNT_CAP} -> {name}++ :: else -> skip fi"


def _updates(row: RawTransition, event: RawEvent) -> list[str]:
    """Besides the phase, what raw_engine._apply derives from the event and the actions."""
    lines = [f"ev = {_EVENTS.index(event)}"]
    if event in CANCELS:
        lines.append("cancelled = 1")
    lines += [_saturating("aborts")] * row.actions.count(RawAction.CALL_ABORT)
    lines += [_saturating("forwarded")] * row.actions.count(RawAction.FORWARD_OBJECT)
    return lines


def raw_claims() -> list[tuple[str, str, str]]:
    """(rule, invariant name, ltl claim name) for every invariant SPIN checks."""
    claims = [(inv.rule, inv.name, inv.name) for inv in RAW_STATE_INVARIANTS]
    return claims + [(inv.rule, inv.name, inv.name) for inv in RAW_STEP_INVARIANTS]


def raw_promela(table: tuple[RawTransition, ...] = RAW_TABLE) -> str:
    """The Promela model of ``table``, with one ``ltl`` claim per invariant."""
    lines = [
        "/* The raw engine adapter's machine, generated from its table (model/raw_engine.py). */",
        f"/* phase: {', '.join(f'{i} {phase.value}' for i, phase in enumerate(_PHASES))} */",
        f"/* ev: {', '.join(f'{i} {ev.value}' for i, ev in enumerate(_EVENTS))} */",
        "byte phase = 0; bool cancelled = false; byte aborts = 0; byte forwarded = 0; byte ev = 255;",
        *(f"bool broke_{inv.name} = false;" for inv in RAW_STEP_INVARIANTS),
        "",
        "active proctype raw_request() {",
        "end: do",
    ]
    for command in phase_commands(raw_table(table), RAW_FIELDS, _state, _updates, RAW_STEP_INVARIANTS):
        lines.append(f"  :: {command.enabled()} -> d_step {{ {'; '.join(command.steps())} }}")
    lines += ["  od", "}", ""]
    for state_invariant in RAW_STATE_INVARIANTS:
        holds = tabulated(RAW_FIELDS, functools.partial(_holds, state_invariant), {})
        lines.append(f"ltl {state_invariant.name} {{ [] {holds} }}")
    for step_invariant in RAW_STEP_INVARIANTS:
        lines.append(f"ltl {step_invariant.name} {{ [] !broke_{step_invariant.name} }}")
    return "\n".join(lines) + "\n"
