"""The parts every Promela export is built from: fields, tabulated expressions, commands, monitors.

A predicate written in Python (a guard, an invariant, a liveness trigger)
becomes a Promela expression by evaluating it on every combination of the
fields it may read and keeping only the fields its value depends on.  A row
of a table becomes one guarded command per (source state, event); its
updates follow the machine's own rules for effects and derived variables.
A step invariant becomes a *monitor*: for each command, the set of states
before the step in which that step breaks it, tabulated from the Python
predicate on the very step the machine would take; the command sets the
flag ``broke_<name>`` when it fires in such a state, and the claim is
``[] !broke_<name>``.  SPIN still decides on its own which states are
reachable.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Generic, TypeVar

from dynamo_backend_protocol.model.guarded import GuardedTable, Row
from dynamo_backend_protocol.model.guarded import Step as GuardedStep
from dynamo_backend_protocol.model.invariants import STEP_INVARIANTS, Invariant
from dynamo_backend_protocol.model.lifecycle import (
    LIFECYCLE_STEP_INVARIANTS,
    SERVING_EVENTS,
    LifecycleEvent,
    LifecycleState,
    LifecycleTransition,
    Phase,
    StartOutcome,
    lifecycle_table,
)
from dynamo_backend_protocol.model.liveness import Fairness, LivenessProperty
from dynamo_backend_protocol.model.machine import CompiledTable, Step
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

X = TypeVar("X")
S = TypeVar("S")
E = TypeVar("E")

CONTROLS = tuple(ControlState)
CANCELS: tuple[CancelCause | None, ...] = (None, *CancelCause)
ENDS: tuple[StreamEnd | None, ...] = (None, *StreamEnd)
MAX_ABORTS = 3
"""The abort count saturates here in the exports (a fourth abort is still 3): no invariant tells 3 from more."""


@dataclass(frozen=True)
class Field:
    """One Promela byte variable: its name and the Python values its codes stand for."""

    name: str
    values: tuple[object, ...]

    def code(self, value: object) -> int:
        return self.values.index(value)


REQUEST_FIELDS = (
    Field("control", CONTROLS),
    Field("first_token", (False, True)),
    Field("cancel", CANCELS),
    Field("aborts", tuple(range(MAX_ABORTS + 1))),
    Field("ended", ENDS),
    Field("watching", (False, True)),
    Field("forwarded", (False, True)),
)

LIFECYCLE_FIELDS = (
    Field("lc_phase", tuple(Phase)),
    Field("lc_start", tuple(StartOutcome)),
    Field("lc_cleaned", (False, True)),
    Field("lc_served", (False, True)),
)
"""The lifecycle's fields, prefixed so that they never meet a request field's name."""


def request_state(mode: Mode, values: dict[str, object]) -> RequestState:
    return _request_state(mode, tuple(values.items()))


@cache
def _request_state(mode: Mode, values: tuple[tuple[str, object], ...]) -> RequestState:
    # Tabulation builds the same few thousand states over and over: build each once.
    return RequestState(mode=mode, **dict(values))  # type: ignore[arg-type]


def lifecycle_state(values: dict[str, object]) -> LifecycleState:
    return LifecycleState(**{name.removeprefix("lc_"): value for name, value in values.items()})  # type: ignore[arg-type]


def expression(mode: Mode, predicate: Callable[[RequestState], bool], fixed: dict[str, object]) -> str:
    """``predicate`` on a request as a Promela expression over the fields it depends on (``fixed`` ones excluded)."""
    return tabulated(REQUEST_FIELDS, lambda values: predicate(request_state(mode, values)), fixed)


def lifecycle_expression(predicate: Callable[[LifecycleState], bool], fixed: dict[str, object]) -> str:
    return tabulated(LIFECYCLE_FIELDS, lambda values: predicate(lifecycle_state(values)), fixed)


def tabulated(
    fields: Sequence[Field], predicate: Callable[[dict[str, object]], bool], fixed: dict[str, object]
) -> str:
    free = [field for field in fields if field.name not in fixed]
    combos = list(itertools.product(*(field.values for field in free)))
    table = {combo: bool(predicate(_values(free, combo) | fixed)) for combo in combos}
    return from_table(free, table)


def _values(free: Sequence[Field], combo: tuple[object, ...]) -> dict[str, object]:
    return dict(zip((field.name for field in free), combo, strict=True))


def tabulated_many(
    fields: Sequence[Field],
    subject: Callable[[dict[str, object]], X],
    predicates: Sequence[Callable[[X], bool]],
    fixed: dict[str, object],
) -> list[str]:
    """Several predicates on one subject built once per combination of the fields (a step, say)."""
    free = [field for field in fields if field.name not in fixed]
    combos = list(itertools.product(*(field.values for field in free)))
    subjects = [subject(_values(free, combo) | fixed) for combo in combos]
    return [
        from_table(free, {combo: bool(predicate(x)) for combo, x in zip(combos, subjects, strict=True)})
        for predicate in predicates
    ]


def from_table(free: Sequence[Field], table: dict[tuple[object, ...], bool]) -> str:
    """The Promela expression of a truth table over ``free``, over the fields its value depends on."""
    results = set(table.values())
    if len(results) == 1:
        return "true" if results == {True} else "false"
    relevant = [index for index in range(len(free)) if _depends(table, index)]
    projected = {tuple(combo[i] for i in relevant): result for combo, result in table.items()}
    kept = [free[i] for i in relevant]
    true_terms = [combo for combo, result in projected.items() if result]
    false_terms = [combo for combo, result in projected.items() if not result]
    if len(true_terms) <= len(false_terms):
        return _disjunction(kept, true_terms)
    return f"!{_disjunction(kept, false_terms)}"


def _depends(table: dict[tuple[object, ...], bool], index: int) -> bool:
    seen: dict[tuple[object, ...], bool] = {}
    for combo, result in table.items():
        rest = combo[:index] + combo[index + 1 :]
        if seen.setdefault(rest, result) != result:
            return True
    return False


def _disjunction(fields: Sequence[Field], terms: Sequence[tuple[object, ...]]) -> str:
    def clause(term: tuple[object, ...]) -> str:
        tests = [
            f"{field.name} == {field.code(value)}"
            for field, value in zip(fields, term, strict=True)
            if value is not _ANY
        ]
        return all_of(tests)

    return "(" + " || ".join(clause(term) for term in _merged(fields, terms)) + ")"


_ANY = object()
"""A field a merged term does not test."""


def _merged(fields: Sequence[Field], terms: Sequence[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Terms that differ only in one field and cover all its values become one term that does not
    test it, until none do (enough to keep "Done, whatever else" one clause)."""
    current = set(terms)
    changed = True
    while changed:
        changed = False
        for index, field in enumerate(fields):
            groups: dict[tuple[object, ...], set[object]] = {}
            for term in current:
                groups.setdefault(term[:index] + term[index + 1 :], set()).add(term[index])
            for rest, values in groups.items():
                if len(values) == len(field.values) and _ANY not in values:
                    for value in values:
                        current.discard((*rest[:index], value, *rest[index:]))
                    current.add((*rest[:index], _ANY, *rest[index:]))
                    changed = True

    def key(term: tuple[object, ...]) -> tuple[int, ...]:
        return tuple(-1 if value is _ANY else field.code(value) for field, value in zip(fields, term, strict=True))

    return sorted(current, key=key)


_INLINE_LIMIT = 8000
"""Characters per inline: SPIN refuses an inline whose text is too long (its limit is not documented)."""


def atoms_inline(statements: Sequence[str]) -> list[str]:
    """``inline atoms()``, which recomputes every proposition the claims read, split into inlines of
    bounded length that it calls in order."""
    parts: list[list[str]] = [[]]
    size = 0
    for statement in statements:
        if parts[-1] and size + len(statement) > _INLINE_LIMIT:
            parts.append([])
            size = 0
        parts[-1].append(statement)
        size += len(statement)
    lines: list[str] = []
    for index, part in enumerate(parts):
        lines += [f"inline atoms_{index}() {{", *(f"  {statement};" for statement in part), "}", ""]
    return [*lines, "inline atoms() {", *(f"  atoms_{index}();" for index in range(len(parts))), "}"]


def any_of(terms: Sequence[str]) -> str:
    """The disjunction of ``terms``, each once, without the ones that say nothing."""
    kept = list(dict.fromkeys(term for term in terms if term != "false"))
    if "true" in kept:
        return "true"
    return "(" + (" || ".join(kept) or "false") + ")"


def all_of(terms: Sequence[str]) -> str:
    """The conjunction of ``terms``, each once, without the ones that say nothing."""
    kept = list(dict.fromkeys(term for term in terms if term != "true"))
    if "false" in kept:
        return "false"
    return "(" + (" && ".join(kept) or "true") + ")"


def identifier(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def monitor_line(name: str, broken: str) -> str:
    """Sets the monitor flag of step invariant ``name`` when ``broken`` holds of the state before the step."""
    return f"if :: {broken} -> broke_{name} = 1 :: else -> skip fi"


# --------------------------------------------------------------------------- commands and liveness


@dataclass(frozen=True)
class Guarded(Generic[E]):
    """One command of the generated process: when it is enabled, the event it stands for, what it does."""

    enabled: str
    code: int
    """The value of ``last`` after it: which event was taken, for the fairness of the liveness claims."""
    event: E
    steps: tuple[str, ...]
    comment: str

    def line(self) -> str:
        body = "; ".join([f"last = {self.code}", *self.steps])
        return f"      :: {self.enabled} -> {body}  /* {self.comment} */"


def step_loop(commands: Sequence[Guarded[E]]) -> list[str]:
    """The process's loop: each step fires one enabled command, then recomputes the propositions
    once (written once, not inlined into every command: the verifier compiles many times faster).
    With no command enabled the run is over (``dead``)."""
    return [
        "  do",
        "  :: atomic {",
        "      if",
        *(command.line() for command in commands),
        "      :: else -> dead = 1; break",
        "      fi;",
        "      atoms()",
        "    }",
        "  od",
    ]


def fairness_atom(commands: Sequence[Guarded[E]], fairness: Fairness[E]) -> str:
    """``!enabled || taken`` of a weak fairness class: ``[]<>`` of it is the class's weak fairness."""
    covered = [command for command in commands if fairness.covers(command.event)]
    enabled = any_of([command.enabled for command in covered])
    taken = any_of([f"last == {code}" for code in sorted({command.code for command in covered})])
    return f"(!{enabled} || {taken})"


def liveness_claim_name(prop: LivenessProperty[S, E]) -> str:
    return identifier(prop.name)


def liveness_claim(prop: LivenessProperty[S, E]) -> str:
    """Weak fairness of each class is ``[]<> fair_<class>``; their conjunction is the one
    ``[]<> fair_<property>`` that :func:`fairness_rounds` computes, so SPIN translates a claim
    of three temporal operators whatever the number of classes (a conjunction of five took it
    minutes)."""
    name = liveness_claim_name(prop)
    return f"ltl {name} {{ ([]<> fair_{name} && [] !dead) -> [] (trigger_{name} -> <> goal_{name}) }}"


def fairness_rounds(prop: LivenessProperty[S, E]) -> tuple[list[str], list[str]]:
    """(declarations, statements for atoms()) of a counter that goes round the property's fairness
    classes, moving on from class i in a state where its atom holds; ``fair_<property>`` is set
    when a round completes.  Rounds complete infinitely often exactly when every class's atom holds
    infinitely often (the standard degeneralisation of a generalised Büchi condition)."""
    name = liveness_claim_name(prop)
    classes = [identifier(f.name) for f in prop.fairness]
    steps = [
        f"if :: round_{name} == {i} && fair_{c} -> round_{name} = {i + 1} :: else -> skip fi"
        for i, c in enumerate(classes)
    ]
    done = len(classes)
    steps.append(f"if :: round_{name} == {done} -> round_{name} = 0; fair_{name} = 1 :: else -> fair_{name} = 0 fi")
    return [f"byte round_{name} = 0;", f"bool fair_{name} = 0;"], steps


# --------------------------------------------------------------------------- request commands


@dataclass(frozen=True)
class Command:
    """One row of the request table, for one source state and one event."""

    source: ControlState
    event: Event
    row: Transition
    guard: str
    monitors: tuple[tuple[str, str], ...]
    """(step invariant name, the before-states in which this step breaks it)."""

    def enabled(self) -> str:
        return all_of([f"control == {CONTROLS.index(self.source)}", self.guard])

    def monitor_lines(self) -> list[str]:
        return [monitor_line(name, broken) for name, broken in self.monitors]


def request_commands(table: CompiledTable, mode: Mode) -> list[Command]:
    commands: list[Command] = []
    for row in table.table:
        for source in row.sources:
            for ev in ALL_EVENTS:
                if ev.kind is not row.trigger:
                    continue
                found = _request_command(mode, row, source, ev)
                if found is not None:
                    commands.append(found)
    return commands


@cache
def _request_command(mode: Mode, row: Transition, source: ControlState, ev: Event) -> Command | None:
    """Cached by value: a mutant shares all rows but one with the shipped table."""
    fixed: dict[str, object] = {"control": source}
    guard = expression(mode, _bound(row, ev), fixed)
    if guard == "false":
        return None
    return Command(source, ev, row, guard, _request_monitors(mode, row, source, ev, fixed))


def _bound(row: Transition, ev: Event) -> Callable[[RequestState], bool]:
    return lambda state: row.guard(state, ev)


def _request_monitors(
    mode: Mode, row: Transition, source: ControlState, ev: Event, fixed: dict[str, object]
) -> tuple[tuple[str, str], ...]:
    """For each step invariant, the states in which firing ``row`` on ``ev`` breaks it: the step
    is the one the machine takes when this row is the only one that matches."""
    alone = CompiledTable((replace(row, sources=(source,)),), {})

    def step_from(values: dict[str, object]) -> Step | None:
        state = request_state(mode, values)
        return alone.step(state, ev) if row.guard(state, ev) else None

    def breaks(inv: Invariant[Step]) -> Callable[[Step | None], bool]:
        return lambda taken: taken is not None and not inv.holds(taken)

    found = tabulated_many(REQUEST_FIELDS, step_from, [breaks(inv) for inv in STEP_INVARIANTS], fixed)
    return tuple((inv.name, broken) for inv, broken in zip(STEP_INVARIANTS, found, strict=True) if broken != "false")


_CANCEL_CODE = {
    EventKind.STOP: CANCELS.index(CancelCause.STOP),
    EventKind.KILL: CANCELS.index(CancelCause.KILL),
    EventKind.DISCONNECT: CANCELS.index(CancelCause.KILL),
}
"""As the machine records a cancellation: a client that went away is a kill (RUNTIME-DISCONNECT-KILLS)."""


def request_updates(command: Command) -> list[str]:
    """The step's effect on the variables, in the machine's order (see machine._apply)."""
    row, ev = command.row, command.event
    if row.ignored:
        return []
    lines: list[str] = []
    if row.target is not None:
        lines.append(f"control = {CONTROLS.index(row.target)}")
    if Effect.START_WATCH in row.effects:
        lines.append("watching = 1")
    if Effect.NOTE_FIRST_TOKEN in row.effects and ev.signals_first_token:
        lines.append("first_token = 1")
    if Effect.RECORD_CANCEL in row.effects and ev.kind in _CANCEL_CODE:
        lines.append(f"if :: cancel == 0 -> cancel = {_CANCEL_CODE[ev.kind]} :: else -> skip fi")
    if row.ends is not None:
        lines.append(f"if :: ended == 0 -> ended = {ENDS.index(StreamEnd(row.ends))} :: else -> skip fi")
    for _ in range(row.actions.count(ActionKind.CALL_ABORT)):
        lines.append(f"if :: aborts < {MAX_ABORTS} -> aborts++ :: else -> skip fi")
    if any(action in FORWARDS for action in row.actions):
        lines.append("forwarded = 1")
    if ActionKind.RELEASE_WATCH in row.actions:
        lines.append("watching = 0")
    return lines


def request_event_code(ev: Event) -> int:
    return ALL_EVENTS.index(ev)


# --------------------------------------------------------------------------- phase-table commands


@dataclass(frozen=True)
class PhaseCommand(Generic[E]):
    """One row of a phase machine's table (the lifecycle, the raw adapter, the KV transfer), for
    one source phase and one event: enabled when the phase is the source and the guard holds."""

    phase: Field
    source: object
    event: E
    row: Row[Any, Any, Any, Any, E]
    guard: str
    monitors: tuple[tuple[str, str], ...]
    """(step invariant name, the before-states in which this step breaks it)."""
    updates: tuple[str, ...]

    def enabled(self) -> str:
        return all_of([f"{self.phase.name} == {self.phase.code(self.source)}", self.guard])

    def monitor_lines(self) -> list[str]:
        return [monitor_line(name, broken) for name, broken in self.monitors]

    def steps(self) -> list[str]:
        """The monitors, which judge the state before the step, then the updates."""
        return [*self.monitor_lines(), *self.updates]


def phase_commands(
    table: GuardedTable[Any, Any, Any, S, E],
    fields: Sequence[Field],
    state_of: Callable[[dict[str, object]], S],
    extended: Callable[[Row[Any, Any, Any, S, E], E], list[str]],
    step_invariants: Sequence[Invariant[GuardedStep[S, E, Any]]] = (),
) -> list[PhaseCommand[E]]:
    """Every row of ``table`` as one guarded command per source phase: the phase test and the guard
    tabulated over ``fields`` (the phase's first; ``state_of`` builds the machine's state from their
    values), the phase update from the row, ``extended``'s updates of the other variables (what the
    table's ``apply`` does to them), and a monitor per step invariant, tabulated on the step
    :meth:`GuardedTable.fire` takes.  A row's trigger is its event.  Prohibitions need no command:
    an event no row allows is simply not offered, in the explorer as here."""
    phase = fields[0]
    commands: list[PhaseCommand[E]] = []
    for row in table.rows:
        ev: E = row.trigger
        for source in row.sources:
            fixed: dict[str, object] = {phase.name: source}
            guard = tabulated(fields, functools.partial(_row_guard, row, ev, state_of), fixed)
            if guard == "false":
                continue
            monitors = _phase_monitors(table, fields, state_of, row, ev, step_invariants, fixed)
            updates: list[str] = []
            if not row.ignored:
                updates = [] if row.target is None else [f"{phase.name} = {phase.code(row.target)}"]
                updates += extended(row, ev)
            commands.append(PhaseCommand(phase, source, ev, row, guard, monitors, tuple(updates)))
    return commands


def _row_guard(
    row: Row[Any, Any, Any, S, E], ev: E, state_of: Callable[[dict[str, object]], S], values: dict[str, object]
) -> bool:
    return row.guard(state_of(values), ev)


def _phase_monitors(
    table: GuardedTable[Any, Any, Any, S, E],
    fields: Sequence[Field],
    state_of: Callable[[dict[str, object]], S],
    row: Row[Any, Any, Any, S, E],
    ev: E,
    invariants: Sequence[Invariant[GuardedStep[S, E, Any]]],
    fixed: dict[str, object],
) -> tuple[tuple[str, str], ...]:
    def step_from(values: dict[str, object]) -> GuardedStep[S, E, Any] | None:
        state = state_of(values)
        return table.fire(state, ev, row) if row.guard(state, ev) else None

    def breaks(inv: Invariant[GuardedStep[S, E, Any]]) -> Callable[[GuardedStep[S, E, Any] | None], bool]:
        return lambda taken: taken is not None and not inv.holds(taken)

    found = tabulated_many(fields, step_from, [breaks(inv) for inv in invariants], fixed)
    return tuple((inv.name, broken) for inv, broken in zip(invariants, found, strict=True) if broken != "false")


# --------------------------------------------------------------------------- lifecycle commands


LifecycleCommand = PhaseCommand[LifecycleEvent]


def lifecycle_commands(rows: tuple[LifecycleTransition, ...]) -> list[LifecycleCommand]:
    """Every row of the lifecycle table as a guarded command over the lifecycle's fields."""
    return phase_commands(
        lifecycle_table(rows), LIFECYCLE_FIELDS, lifecycle_state, _lifecycle_updates, LIFECYCLE_STEP_INVARIANTS
    )


def _lifecycle_updates(row: LifecycleTransition, event: LifecycleEvent) -> list[str]:
    """Besides the phase, what the event was (lifecycle._apply)."""
    start = LIFECYCLE_FIELDS[1]
    lines: list[str] = []
    outcome = _START_OUTCOMES.get(event)
    if outcome is not None:
        lines.append(f"lc_start = {start.code(outcome)}")
    if event in SERVING_EVENTS:
        lines.append("lc_served = 1")
    if event is LifecycleEvent.CLEANUP_OK:
        lines.append("lc_cleaned = 1")
    return lines


_START_OUTCOMES = {
    LifecycleEvent.START_CALLED: StartOutcome.PENDING,
    LifecycleEvent.START_OK: StartOutcome.SUCCEEDED,
    LifecycleEvent.START_RAISED: StartOutcome.RAISED,
}


def lifecycle_choice(commands: Sequence[LifecycleCommand], event: LifecycleEvent, otherwise: str | None) -> str:
    """A Promela ``if`` that fires the lifecycle's row for ``event`` (``otherwise`` when none is enabled;
    None: block, so the caller must have checked that one is)."""
    options = [
        f":: {command.enabled()} -> {'; '.join(command.steps()) or 'skip'}"
        for command in commands
        if command.event is event
    ]
    if otherwise is not None:
        options.append(f":: else -> {otherwise}")
    return "if " + " ".join(options) + " fi"


ALL_SAFETY = "all_safety_claims"
"""One claim conjoining every ``[] p`` claim: when it holds (the usual case) one verifier run
decides them all, and each is run on its own only when it fails."""


def safety_conjunction(propositions: Sequence[str]) -> tuple[str, str, str]:
    """(declaration, statement for the end of atoms(), claim): SPIN's LTL parser refuses a long
    formula, so the conjunction is one more proposition."""
    return "bool all_safe = 1;", f"all_safe = ({' && '.join(propositions)})", f"ltl {ALL_SAFETY} {{ [] all_safe }}"
