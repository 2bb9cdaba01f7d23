"""Exporting the raw engine adapter's table as a Promela model, for SPIN.

Generated from :data:`..raw_engine.RAW_TABLE`, never written by hand: the
state's fields are tabulated on every combination (phase, cancelled, aborts
and forwarded objects, the counts saturating at 2 so a faulty table that
aborts twice still shows), and every event the table allows in a
combination becomes one guarded atomic step that sets the fields the table
gives and each step invariant's monitor flag.  SPIN explores from Idle on its
own.  It checks every state invariant as ``[] p`` (``p`` tabulated) and every
step invariant as ``[] !broke_<name>``.  Not checked by SPIN: that Done is
reachable from every state (branching time, which LTL cannot state); the
explorer checks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

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

COUNT_CAP = 2
"""Aborts and forwarded objects are counted up to this (saturating): enough to see a second abort."""
_PHASES = tuple(RawPhase)
_EVENTS = tuple(RawEvent)


def all_states() -> Iterator[RawState]:
    """Every combination of the state's fields, reachable or not."""
    counts = range(COUNT_CAP + 1)
    for phase, cancelled, aborts, forwarded in product(_PHASES, (False, True), counts, counts):
        yield RawState(phase, cancelled, aborts, forwarded)


def _capped(state: RawState) -> RawState:
    return RawState(state.phase, state.cancelled, min(state.aborts, COUNT_CAP), min(state.forwarded, COUNT_CAP))


def _is(state: RawState) -> str:
    return (f"(phase == {_PHASES.index(state.phase)} && cancelled == {int(state.cancelled)} && "
            f"aborts == {state.aborts} && forwarded == {state.forwarded})")


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
    for before in all_states():
        for event in _EVENTS:
            try:
                step = raw_step(before, event, table)
            except ProtocolViolation:
                continue
            after = _capped(step.after)
            updates = [
                f"ev = {_EVENTS.index(event)}",
                f"phase = {_PHASES.index(after.phase)}",
                f"cancelled = {int(after.cancelled)}",
                f"aborts = {after.aborts}",
                f"forwarded = {after.forwarded}",
                *(f"broke_{inv.name} = {int(not inv.holds(step))}" for inv in RAW_STEP_INVARIANTS),
            ]
            lines.append(f"  :: {_is(before)} -> d_step {{ {'; '.join(updates)} }}")
    lines += ["  od", "}", ""]
    for state_invariant in RAW_STATE_INVARIANTS:
        failing = [_is(state) for state in all_states() if not state_invariant.holds(state)]
        broken = " || ".join(failing) if failing else "false"
        lines.append(f"ltl {state_invariant.name} {{ [] !({broken}) }}")
    for step_invariant in RAW_STEP_INVARIANTS:
        lines.append(f"ltl {step_invariant.name} {{ [] !broke_{step_invariant.name} }}")
    return "\n".join(lines) + "\n"
