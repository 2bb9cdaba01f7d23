"""Exporting N requests sharing one engine (:mod:`..engine`) as a Promela model, for SPIN.

Both machines come from their tables (:mod:`.promela_parts`): the requests'
rows as in the one-request export, each request field an array indexed by
the request; the lifecycle's rows as guarded commands over its own fields
(``lc_phase``, ``lc_start``, ``lc_cleaned``, ``lc_served``), their guards
tabulated from the Python guards and their updates following the
lifecycle's derived variables.  The synchronisation of :mod:`..engine` is
written here from its definition, not taken from an explorer: a request's
first step is a generate (only where a lifecycle row serves one), a step
calling abort moves the lifecycle by its abort row (if any), and cleanup
waits for requests in flight.  Every step invariant (the requests', the
lifecycle's and the composition's) is a monitor flag set by the step that
breaks it.  Safety only: every request state invariant on every request,
the LIFECYCLE-* invariants and the ENGINE-* rules.  No symmetry reduction:
SPIN sees every interleaving.
"""

from __future__ import annotations

import re

from dynamo_backend_protocol.model.engine import (
    CLEANUP_WAITS,
    ENGINE_OWN_EVENTS,
    NO_ABORT_AFTER_CLEANUP,
    NO_LIVE_AFTER_CLEANUP,
    Composition,
    EngineEvent,
    EngineLiveness,
    RequestMove,
    cleanup_begun,
    engine_liveness,
    engine_started,
    in_flight,
)
from dynamo_backend_protocol.model.explore.engine import LIVENESS_MAX_REQUESTS
from dynamo_backend_protocol.model.explore.promela_parts import (
    CONTROLS,
    LIFECYCLE_FIELDS,
    REQUEST_FIELDS,
    Guarded,
    any_of,
    atoms_inline,
    expression,
    fairness_atom,
    fairness_rounds,
    identifier,
    lifecycle_choice,
    lifecycle_commands,
    lifecycle_expression,
    liveness_claim,
    liveness_claim_name,
    monitor_line,
    request_commands,
    request_event_code,
    request_updates,
    safety_conjunction,
    step_loop,
)
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.model.lifecycle import (
    LIFECYCLE_STATE_INVARIANTS,
    LIFECYCLE_STEP_INVARIANTS,
    LIFECYCLE_TABLE,
    LifecycleEvent,
    LifecycleState,
    LifecycleTransition,
)
from dynamo_backend_protocol.model.liveness import done
from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ActionKind, ControlState

_FIELD_NAME = re.compile(r"\b(" + "|".join(field.name for field in REQUEST_FIELDS) + r")\b")

IN_FLIGHT_AT_CLEANUP = "cleanup_begins_with_no_request_in_flight"
IN_FLIGHT_ONCE_BEGUN = "no_request_in_flight_once_cleanup_begins"
ABORT_ONCE_BEGUN = "no_abort_once_cleanup_begins"


def engine_claims(composition: Composition | None = None) -> list[tuple[str, str, str]]:
    """(rule, property name, ltl claim name) of every property the composed export states; with a
    composition of at most :data:`LIVENESS_MAX_REQUESTS` requests, its liveness properties too."""
    safety = [
        *((inv.rule, inv.name, inv.name) for inv in STATE_INVARIANTS),
        *((inv.rule, inv.name, inv.name) for inv in STEP_INVARIANTS),
        *((inv.rule, inv.name, inv.name) for inv in LIFECYCLE_STATE_INVARIANTS),
        *((inv.rule, inv.name, inv.name) for inv in LIFECYCLE_STEP_INVARIANTS),
        (NO_LIVE_AFTER_CLEANUP, IN_FLIGHT_ONCE_BEGUN, IN_FLIGHT_ONCE_BEGUN),
        (CLEANUP_WAITS, IN_FLIGHT_AT_CLEANUP, IN_FLIGHT_AT_CLEANUP),
        (NO_ABORT_AFTER_CLEANUP, ABORT_ONCE_BEGUN, ABORT_ONCE_BEGUN),
    ]
    return safety + [(prop.rule, prop.name, liveness_claim_name(prop)) for prop in _liveness(composition)]


def _liveness(composition: Composition | None) -> tuple[EngineLiveness, ...]:
    if composition is None or composition.requests > LIVENESS_MAX_REQUESTS:
        return ()
    return engine_liveness(composition)


def _of(text: str, index: int) -> str:
    return _FIELD_NAME.sub(lambda found: f"{found.group(1)}[{index}]", text)


def export_engine_promela(
    composition: Composition, table: CompiledTable, lifecycle: tuple[LifecycleTransition, ...] = LIFECYCLE_TABLE
) -> str:
    header = (
        f"/* Generated from the tables by dynamo-backend-protocol: {composition.requests} "
        f"{composition.mode.value} request(s) sharing one engine. Do not edit. */"
    )
    return f"{header}\n{engine_promela_body(composition, table, lifecycle)}"


def engine_promela_body(
    composition: Composition, table: CompiledTable, lifecycle: tuple[LifecycleTransition, ...] = LIFECYCLE_TABLE
) -> str:
    mode, n = composition.mode, composition.requests
    life = lifecycle_commands(lifecycle)
    initial = table.initial(mode)
    codes = {field.name: field.code(getattr(initial, field.name)) for field in REQUEST_FIELDS}
    at_start = [
        "(" + " && ".join(f"{name}[{i}] == {code}" for name, code in codes.items()) + ")" for i in range(n)
    ]
    done = CONTROLS.index(ControlState.DONE)
    in_flight = any_of([f"(!{at_start[i]} && control[{i}] != {done})" for i in range(n)])
    begun = lifecycle_expression(cleanup_begun, {})
    serves = any_of([command.enabled() for command in life if command.event is LifecycleEvent.GENERATE])
    generate = lifecycle_choice(life, LifecycleEvent.GENERATE, None)
    abort = lifecycle_choice(life, LifecycleEvent.ABORT, "skip")
    atoms = [
        *(
            (f"inv_{inv.name}", "(" + " && ".join(_of(expression(mode, inv.holds, {}), i) for i in range(n)) + ")")
            for inv in STATE_INVARIANTS
        ),
        *((f"inv_{inv.name}", lifecycle_expression(inv.holds, {})) for inv in LIFECYCLE_STATE_INVARIANTS),
        (f"inv_{IN_FLIGHT_ONCE_BEGUN}", f"(!{begun} || !{in_flight})"),
    ]
    commands: list[Guarded[EngineEvent]] = []
    own_code = n * len(ALL_EVENTS)
    for life_command in life:
        if life_command.event not in ENGINE_OWN_EVENTS:
            continue
        guard = life_command.enabled()
        steps = life_command.steps()
        if life_command.event is LifecycleEvent.CLEANUP_CALLED:
            if composition.cleanup_waits_for_requests:
                guard = f"({guard} && !{in_flight})"
            else:
                steps.insert(0, monitor_line(IN_FLIGHT_AT_CLEANUP, in_flight))
        code = own_code + ENGINE_OWN_EVENTS.index(life_command.event)
        comment = f"{life_command.event.value}: {life_command.row.rule}"
        commands.append(Guarded(guard, code, life_command.event, tuple(steps), comment))
    for command in request_commands(table, mode):
        for i in range(n):
            enabled = _of(command.enabled(), i)
            updates = [_of(line, i) for line in [*command.monitor_lines(), *request_updates(command)]]
            if ActionKind.CALL_ABORT in command.row.actions:
                updates = [monitor_line(ABORT_ONCE_BEGUN, begun), abort, *updates]
            move: EngineEvent = RequestMove(i, command.event)
            code = i * len(ALL_EVENTS) + request_event_code(command.event)
            comment = f"r{i + 1}:{command.event.name}: {command.row.rule}"
            if command.row.ignored or command.source is not initial.control:
                # Changes nothing, or cannot be a request's first step: no generate in it.
                commands.append(Guarded(enabled, code, move, tuple(updates), comment))
                continue
            # The request's first step is the engine's generate: only where the engine serves one.
            first = f"({enabled} && {at_start[i]} && {serves})"
            commands.append(Guarded(first, code, move, (generate, *updates), comment))
            commands.append(Guarded(f"({enabled} && !{at_start[i]})", code, move, tuple(updates), comment))
    properties = _liveness(composition)
    atoms += _liveness_atoms(composition, properties, commands)
    rounds = [fairness_rounds(prop) for prop in properties]
    start = LifecycleState()
    monitors = [
        *(inv.name for inv in STEP_INVARIANTS),
        *(inv.name for inv in LIFECYCLE_STEP_INVARIANTS),
        IN_FLIGHT_AT_CLEANUP,
        ABORT_ONCE_BEGUN,
    ]
    atom_names = {variable.removeprefix("inv_") for variable, _ in atoms}
    propositions = [f"inv_{name}" if name in atom_names else f"!broke_{name}" for _, name, _ in engine_claims()]
    conjunction = safety_conjunction(propositions)
    lines = [
        *(f"byte {name}[{n}];" for name in codes),
        *(f"byte {field.name} = {field.code(getattr(start, field.name.removeprefix('lc_')))};"
          for field in LIFECYCLE_FIELDS),
        "byte last = 255;",
        "bool dead = 0;",
        *(f"bool broke_{name} = 0;" for name in monitors),
        *(f"bool {variable} = 1;" for variable, _ in atoms),
        *(declaration for declarations, _ in rounds for declaration in declarations),
        "",
        conjunction[0],
        "",
        *atoms_inline(
            [*(f"{v} = {text}" for v, text in atoms), *(s for _, ss in rounds for s in ss), conjunction[1]]
        ),
        "",
        "active proctype engine() {",
        *(f"  {name}[{i}] = {code};" for i in range(n) for name, code in codes.items()),
        "  atoms();",
    ]
    lines += [*step_loop(commands), "}", ""]
    lines += [f"ltl {claim} {{ [] {p} }}" for (_, _, claim), p in zip(engine_claims(), propositions, strict=True)]
    lines.append(conjunction[2])
    lines += [liveness_claim(prop) for prop in properties]
    return "\n".join(lines) + "\n"


def _liveness_atoms(
    composition: Composition,
    properties: tuple[EngineLiveness, ...],
    commands: list[Guarded[EngineEvent]],
) -> list[tuple[str, str]]:
    """Triggers and goals of :func:`..engine.engine_liveness`, tabulated from the same predicates on
    the parts they read (a request's state, the lifecycle's), and the fairness classes' atoms."""
    mode, n = composition.mode, composition.requests
    found: list[tuple[str, str]] = []
    for index, prop in enumerate(properties):
        name = liveness_claim_name(prop)
        if index < n:
            trigger, goal = _of(expression(mode, in_flight, {}), index), _of(expression(mode, done, {}), index)
        else:
            trigger, goal = lifecycle_expression(engine_started, {}), lifecycle_expression(cleanup_begun, {})
        found += [(f"trigger_{name}", trigger), (f"goal_{name}", goal)]
    classes = {identifier(f.name): f for prop in properties for f in prop.fairness}
    found += [(f"fair_{name}", fairness_atom(commands, fairness)) for name, fairness in classes.items()]
    return found
