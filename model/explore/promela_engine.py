"""Exporting N requests sharing one engine (:mod:`..engine`) as a Promela model, for SPIN.

The requests' commands are those of the one-request export
(:mod:`.promela`: every row of the table, its guards tabulated from the
Python predicates), with each field an array indexed by the request.  The
lifecycle is exported from its compiled graph (one byte for the lifecycle
state, a command per allowed event of the engine's own); the
synchronisation of :mod:`..engine` is written here from its definition,
not taken from an explorer: a request's first step is a generate (only
where the lifecycle serves one), a step calling abort moves the lifecycle
by its abort, and cleanup waits for requests in flight.  The composition's
step invariants become monitor flags set by the step that breaks them.
Safety only: every request state invariant on every request, and the three
ENGINE-* invariants.  No symmetry reduction: SPIN sees every interleaving.
"""

from __future__ import annotations

import re

from dynamo_backend_protocol.model.engine import (
    CLEANUP_WAITS,
    ENGINE_OWN_EVENTS,
    NO_ABORT_AFTER_CLEANUP,
    NO_LIVE_AFTER_CLEANUP,
    Composition,
)
from dynamo_backend_protocol.model.explore.compiled import compile_lifecycle
from dynamo_backend_protocol.model.explore.promela import _CONTROLS, _FIELDS, _commands, _expression, _updates
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ActionKind, ControlState

_FIELD_NAME = re.compile(r"\b(" + "|".join(field.name for field in _FIELDS) + r")\b")

IN_FLIGHT_AT_CLEANUP = "cleanup_begins_with_no_request_in_flight"
IN_FLIGHT_ONCE_BEGUN = "no_request_in_flight_once_cleanup_begins"
ABORT_ONCE_BEGUN = "no_abort_once_cleanup_begins"


def engine_claims() -> list[tuple[str, str, str]]:
    """(rule, property name, ltl claim name) of every property the composed export states."""
    return [
        *((inv.rule, inv.name, inv.name) for inv in STATE_INVARIANTS),
        (NO_LIVE_AFTER_CLEANUP, IN_FLIGHT_ONCE_BEGUN, IN_FLIGHT_ONCE_BEGUN),
        (CLEANUP_WAITS, IN_FLIGHT_AT_CLEANUP, IN_FLIGHT_AT_CLEANUP),
        (NO_ABORT_AFTER_CLEANUP, ABORT_ONCE_BEGUN, ABORT_ONCE_BEGUN),
    ]


def _of(expression: str, index: int) -> str:
    return _FIELD_NAME.sub(lambda found: f"{found.group(1)}[{index}]", expression)


def _any(terms: list[str]) -> str:
    return "(" + (" || ".join(terms) or "false") + ")"


def export_engine_promela(composition: Composition, table: CompiledTable) -> str:
    header = (
        f"/* Generated from the tables by dynamo-backend-protocol: {composition.requests} "
        f"{composition.mode.value} request(s) sharing one engine. Do not edit. */"
    )
    return f"{header}\n{engine_promela_body(composition, table)}"


def engine_promela_body(composition: Composition, table: CompiledTable) -> str:
    mode, n = composition.mode, composition.requests
    life = compile_lifecycle()
    initial = table.initial(mode)
    codes = {field.name: field.code(getattr(initial, field.name)) for field in _FIELDS}
    at_start = [
        "(" + " && ".join(f"{name}[{i}] == {code}" for name, code in codes.items()) + ")" for i in range(n)
    ]
    done = _CONTROLS.index(ControlState.DONE)
    in_flight = [f"(!{at_start[i]} && control[{i}] != {done})" for i in range(n)]
    begun = _any([f"lc == {state}" for state in sorted(life.cleanup_begun)])
    serves = _any([f"lc == {state}" for state, to in enumerate(life.generate) if to >= 0])
    generate = " ".join(f":: lc == {state} -> lc = {to}" for state, to in enumerate(life.generate) if to >= 0)
    abort = " ".join(f":: lc == {state} -> lc = {to}" for state, to in enumerate(life.abort) if to >= 0)
    atoms = [
        *(
            (f"inv_{inv.name}", "(" + " && ".join(_of(_expression(mode, inv.holds, {}), i) for i in range(n)) + ")")
            for inv in STATE_INVARIANTS
        ),
        (f"inv_{IN_FLIGHT_ONCE_BEGUN}", f"(!{begun} || !{_any(in_flight)})"),
        (f"inv_{IN_FLIGHT_AT_CLEANUP}", "(!cleanup_in_flight)"),
        (f"inv_{ABORT_ONCE_BEGUN}", "(!abort_after_cleanup)"),
    ]
    lines = [
        *(f"byte {name}[{n}];" for name in codes),
        "byte lc = 0;",
        "bool cleanup_in_flight = 0;",
        "bool abort_after_cleanup = 0;",
        "bool dead = 0;",
        *(f"bool {variable} = 1;" for variable, _ in atoms),
        "",
        "inline atoms() {",
        *(f"  {variable} = {expression};" for variable, expression in atoms),
        "}",
        "",
        "active proctype engine() {",
        *(f"  {name}[{i}] = {code};" for i in range(n) for name, code in codes.items()),
        "  atoms();",
        "  do",
    ]
    cleanup = ENGINE_OWN_EVENTS.index(LifecycleEvent.CLEANUP_CALLED)
    for state, moves in enumerate(life.own):
        for event_index, to in moves:
            guard = f"lc == {state}"
            steps = [f"lc = {to}"]
            if event_index == cleanup:
                if composition.cleanup_waits_for_requests:
                    guard += f" && !{_any(in_flight)}"
                else:
                    steps.insert(0, f"if :: {_any(in_flight)} -> cleanup_in_flight = 1 :: else -> skip fi")
            body = "; ".join([*steps, "atoms()"])
            lines.append(f"  :: atomic {{ {guard} -> {body} }}  /* {ENGINE_OWN_EVENTS[event_index].value} */")
    for command in _commands(table, mode):
        for i in range(n):
            enabled = _of(command.enabled(), i)
            updates = [_of(update, i) for update in _updates(command)]
            if ActionKind.CALL_ABORT in command.row.actions:
                updates = [
                    f"if :: {begun} -> abort_after_cleanup = 1 :: else -> skip fi",
                    f"if {abort} :: else -> skip fi",
                    *updates,
                ]
            name = f"/* r{i + 1}:{command.event.name}: {command.row.rule} */"
            if command.row.ignored or command.source is not initial.control:
                # Changes nothing, or cannot be a request's first step: no generate in it.
                lines.append(f"  :: atomic {{ {enabled} -> {'; '.join([*updates, 'atoms()'])} }}  {name}")
                continue
            # The request's first step is the engine's generate: only where the engine serves one.
            first = "; ".join([f"if {generate} fi", *updates, "atoms()"])
            later = "; ".join([*updates, "atoms()"])
            lines.append(f"  :: atomic {{ ({enabled} && {at_start[i]} && {serves}) -> {first} }}  {name}")
            lines.append(f"  :: atomic {{ ({enabled} && !{at_start[i]}) -> {later} }}  {name}")
    lines += ["  :: else -> dead = 1; break", "  od", "}", ""]
    for _, name, claim in engine_claims():
        lines.append(f"ltl {claim} {{ [] inv_{name} }}")
    assert len(ALL_EVENTS) < 255
    return "\n".join(lines) + "\n"
