"""One guarded-table type for every machine of the model, and its one step.

A machine is a table of :class:`Row` s, each saying: in these phases, on
this kind of event, when this guard holds, go to this phase, perform these
actions, by this rule; and a list of :class:`Prohibition` s, each naming the
rule that forbids an event where no row allows it.  The request, lifecycle,
raw-engine and KV-transfer machines are each one :class:`GuardedTable`; the
disaggregated pair and N requests on one engine are products that step their
component tables with :meth:`GuardedTable.step` and refuse, with
:class:`~.exceptions.NotEnabled`, what their synchronisation rules forbid.

What a table cannot say generically, how a fired row updates the machine's
extended variables, each machine gives as its ``apply`` function; the phase
always comes from the row, so a diagram drawn from the rows is the machine.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError

S = TypeVar("S")
"""A machine's whole state."""
E = TypeVar("E")
"""One event of the machine."""
P = TypeVar("P", bound=Hashable)
"""A control state (phase): what a row's sources and target are."""
K = TypeVar("K", bound=Hashable)
"""What a row is triggered by: the event itself, or its kind."""
A = TypeVar("A")
"""One action a row performs."""
T = TypeVar("T")
Parts = ParamSpec("Parts")


@dataclass(frozen=True)
class Condition(Generic[S, E]):
    """One named fact about the state (or event) that guards are built from."""

    name: str
    opposite: str
    """How the condition reads when it does not hold."""
    test: Callable[[S, E], bool]

    @property
    def holds(self) -> Literal[S, E]:
        return Literal(self, True)

    @property
    def fails(self) -> Literal[S, E]:
        return Literal(self, False)


@dataclass(frozen=True)
class Literal(Generic[S, E]):
    """A condition, or its negation, as one term of a guard."""

    condition: Condition[S, E]
    positive: bool

    @property
    def text(self) -> str:
        return self.condition.name if self.positive else self.condition.opposite

    def __call__(self, state: S, ev: E) -> bool:
        return self.condition.test(state, ev) is self.positive


Clause = tuple[Literal[S, E], ...]
"""Literals joined by "or"."""


def _read(clauses: Sequence[tuple[Literal[Any, Any], ...]]) -> str:
    joiner = "; " if any(len(clause) > 1 for clause in clauses) else ", "
    return joiner.join(" or ".join(lit.text for lit in clause) for clause in clauses)


@dataclass(frozen=True)
class Guard(Generic[S, E]):
    """A named condition on the state (and event) that selects a row.

    A guard built with :meth:`of` is a conjunction of clauses over named
    conditions, so a reader can tell which of its conditions are constant in a
    mode and read the guard without them (:meth:`specialised`).  A guard built
    directly from a test is one opaque condition.
    """

    name: str
    test: Callable[[S, E], bool]
    clauses: tuple[tuple[Literal[S, E], ...], ...] = ()

    @classmethod
    def of(cls, *clauses: Literal[S, E] | tuple[Literal[S, E], ...]) -> Guard[S, E]:
        """The conjunction of ``clauses``; a tuple of literals is their disjunction."""
        normal = tuple(clause if isinstance(clause, tuple) else (clause,) for clause in clauses)

        def test(state: S, ev: E) -> bool:
            return all(any(lit(state, ev) for lit in clause) for clause in normal)

        return cls(_read(normal), test, normal)

    @classmethod
    def on_state(cls, name: str, test: Callable[[S], bool]) -> Guard[S, E]:
        """A guard that reads only the state (the lifecycle's and the raw engine's)."""
        return cls(name, lambda state, ev: test(state))

    def __call__(self, state: S, ev: E) -> bool:
        return self.test(state, ev)

    def __str__(self) -> str:
        return self.name

    def conjunction(self) -> tuple[tuple[Literal[S, E], ...], ...]:
        if self.clauses:
            return self.clauses
        return ((Condition(self.name, f"not {self.name}", self.test).holds,),)

    def specialised(self, points: Collection[tuple[S, E]]) -> str | None:
        """The guard as it reads where it is only ever tested at ``points``: a
        condition constant there is replaced by its value.  None when the guard
        then always holds (it decides nothing there)."""
        kept: list[tuple[Literal[S, E], ...]] = []
        for clause in self.conjunction():
            remaining: list[Literal[S, E]] = []
            satisfied = False
            for lit in clause:
                values = {lit(state, ev) for state, ev in points}
                if values == {True}:
                    satisfied = True
                    break
                if values != {False}:
                    remaining.append(lit)
            if not satisfied:
                kept.append(tuple(remaining))
        return _read(kept) if kept else None


ALWAYS: Guard[Any, Any] = Guard("always", lambda state, ev: True)


@dataclass(frozen=True)
class Row(Generic[P, K, A, S, E]):
    """One transition: in ``sources``, on ``trigger``, when ``guard`` holds, go to
    ``target`` (None: stay), perform ``actions`` in order, by ``rule``."""

    sources: tuple[P, ...]
    trigger: K
    guard: Guard[S, E]
    target: P | None
    actions: tuple[A, ...]
    rule: str
    effects: tuple[enum.Enum, ...] = ()
    """Named updates of the extended variables, read by the machine's ``apply``."""
    ends: str | None = None
    """How this row ends the run, if it does (the request's StreamEnd value)."""
    ignored: bool = False
    """A recorded no-op: the protocol allows the event here and it changes nothing."""

    def label(self) -> str:
        """``event [guard] / actions`` as drawn on a diagram edge."""
        text = str(getattr(self.trigger, "value", self.trigger))
        if self.guard is not ALWAYS:
            text += f" [{self.guard.name}]"
        if self.actions:
            text += " / " + ", ".join(str(getattr(action, "value", action)) for action in self.actions)
        return text


@dataclass(frozen=True)
class Prohibition(Generic[P, K, S, E]):
    """An event the machine forbids in these phases (when the guard holds), and the rule that forbids it."""

    sources: tuple[P, ...]
    trigger: K
    rule: str
    guard: Guard[S, E] = ALWAYS
    then: P | None = None
    """For a forbidden *outcome*: the call is over all the same, so a monitor that keeps
    watching continues from this phase (a cleanup that raised has still ended)."""


@dataclass(frozen=True, slots=True)
class Step(Generic[S, E, A]):
    """One fired event: where it started, what it did, where it ended, and why."""

    before: S
    event: E
    after: S
    actions: tuple[A, ...]
    rule: str
    ignored: bool
    row: Row[Any, Any, A, S, E]


@dataclass
class GuardedTable(Generic[P, K, A, S, E]):
    """A machine's rows and prohibitions, with how to read its states and events.

    :meth:`step` is the one step function of the model: it selects the one row
    whose sources, trigger and guard match, or raises the prohibition's
    :class:`~.exceptions.ProtocolViolation`, or :class:`~.exceptions.TableError`
    when the table itself is faulty (no row, or several).
    """

    name: str
    rows: tuple[Row[P, K, A, S, E], ...]
    prohibitions: tuple[Prohibition[P, K, S, E], ...]
    phase: Callable[[S], P]
    trigger: Callable[[E], K]
    apply: Callable[[S, E, Row[P, K, A, S, E]], S]
    """The state after ``row`` fired (its phase is the row's target, or the source's)."""
    describe: Callable[[S], str]
    event_name: Callable[[E], str]
    with_phase: Callable[[S, P], S] | None = None
    """How a prohibition's ``then`` resumes a state; needed only if some prohibition has one."""
    _index: dict[tuple[P, K], tuple[Row[P, K, A, S, E], ...]] = field(default_factory=dict, repr=False)
    _refusals: dict[tuple[P, K], tuple[Prohibition[P, K, S, E], ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for row in self.rows:
            for source in row.sources:
                self._index[(source, row.trigger)] = (*self._index.get((source, row.trigger), ()), row)
        for prohibition in self.prohibitions:
            for source in prohibition.sources:
                key = (source, prohibition.trigger)
                self._refusals[key] = (*self._refusals.get(key, ()), prohibition)

    def rows_for(self, phase: P, trigger: K) -> tuple[Row[P, K, A, S, E], ...]:
        return self._index.get((phase, trigger), ())

    def forbidding(self, phase: P, trigger: K) -> tuple[Prohibition[P, K, S, E], ...]:
        return self._refusals.get((phase, trigger), ())

    def select(self, state: S, ev: E) -> Row[P, K, A, S, E]:
        """The one row that fires for ``ev`` in ``state``."""
        phase, trigger = self.phase(state), self.trigger(ev)
        candidates = self.rows_for(phase, trigger)
        matching = [row for row in candidates if row.guard(state, ev)]
        if len(matching) == 1:
            return matching[0]
        if matching:
            names = ", ".join(f"[{row.guard.name}]" for row in matching)
            raise TableError(f"{self.name} table has several rows that match ({names}) for event "
                             f"{self.event_name(ev)!r} in state {self.describe(state)}")
        for prohibition in self.forbidding(phase, trigger):
            if prohibition.guard(state, ev):
                resume = None
                if prohibition.then is not None and self.with_phase is not None:
                    resume = self.with_phase(state, prohibition.then)
                where = _phase_text(phase)
                message = f"event {self.event_name(ev)!r} is not allowed in state {where}"
                raise ProtocolViolation(state, ev, prohibition.rule, where, message, resume)
        problem = "has no row" if not candidates else "has no row whose guard holds"
        raise TableError(f"{self.name} table {problem} for event {self.event_name(ev)!r} "
                         f"in state {self.describe(state)}")

    def step(self, state: S, ev: E) -> Step[S, E, A]:
        """Fire ``ev`` in ``state``."""
        return self.fire(state, ev, self.select(state, ev))

    def fire(self, state: S, ev: E, row: Row[P, K, A, S, E]) -> Step[S, E, A]:
        """The step ``row`` takes on ``ev`` in ``state``, as :meth:`step` takes it once the row is
        selected: for a reader that judges one row on its own (the Promela monitors)."""
        after = state if row.ignored else self.apply(state, ev, row)
        return Step(state, ev, after, row.actions, row.rule, row.ignored, row)


def built_once(build: Callable[Parts, T]) -> Callable[Parts, T]:
    """``build``, called once per set of rows: a table built from given rows is kept, by the identity
    of those rows (kept alive with it, so an identity is never reused), and a step that names its
    rows then costs a dictionary look-up, not a hash of every row.  Tests pass rows of their own."""
    built: dict[tuple[int, ...], tuple[object, T]] = {}

    def cached(*parts: Parts.args, **named: Parts.kwargs) -> T:
        key = (*map(id, parts), *(id(value) for value in named.values()))
        hit = built.get(key)
        if hit is None:
            hit = built[key] = ((parts, named), build(*parts, **named))
        return hit[1]

    return cached


def event_itself(event: K) -> K:
    """The trigger of a table whose rows name the event itself (the lifecycle's, the raw adapter's)."""
    return event


def event_value(event: enum.Enum) -> str:
    """How an event that is an enum member is named in messages: its value."""
    return str(event.value)


def _phase_text(phase: Hashable) -> str:
    return str(getattr(phase, "value", phase))


def forbid_the_rest(
    rows: Sequence[Row[P, K, Any, Any, Any]], phases: Sequence[P], triggers: Sequence[K], rule_in: Callable[[P], str]
) -> tuple[Prohibition[P, K, Any, Any], ...]:
    """A prohibition for every (phase, trigger) no row mentions: for a machine whose
    rows list all it allows, so anything else is forbidden by ``rule_in(phase)``."""
    covered = {(source, row.trigger) for row in rows for source in row.sources}
    return tuple(
        Prohibition((phase,), trigger, rule_in(phase))
        for phase in phases
        for trigger in triggers
        if (phase, trigger) not in covered
    )
