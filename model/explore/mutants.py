"""Systematic mutants of the request table, and what ``check`` alone makes of them.

Each mutant changes one thing in a copy of :data:`REQUEST_TABLE` or
:data:`FORBIDDEN`: it deletes a row for one of its source states, retargets
it, drops or adds an action, reverses its actions, drops an effect, swaps its
guard for the complement or for ``always``, deletes a forbidden entry, or
turns a forbidden event into an ignored no-op.  A mutant is *killed* when
exploring it (safety invariants and liveness, every mode) reports a
violation.  A survivor is *equivalent* when no run can tell it from the
shipped table: a walk over the pairs of states both tables reach, every mode,
every event, finds the same refusals and the same actions everywhere.
Anything else is a blind spot of the checker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.request import MAX_STATES, explore
from dynamo_backend_protocol.model.invariants import SPEC_ACTION_ORDER
from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import ALWAYS, FORBIDDEN, REQUEST_TABLE, Guard, Transition
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ActionKind, ControlState, EventKind, Mode

Rows = tuple[Transition, ...]
Forbidden = dict[tuple[ControlState, EventKind], str]


@dataclass(frozen=True)
class Mutant:
    kind: str
    name: str
    rows: Rows
    forbidden: Forbidden

    def table(self) -> CompiledTable:
        return CompiledTable(self.rows, self.forbidden)


def _cell(row: Transition, source: ControlState) -> str:
    guard = "" if row.guard is ALWAYS else f" [{row.guard.name}]"
    return f"{source.value} {row.trigger.value}{guard}"


def _with_cell(rows: Rows, index: int, source: ControlState, changed: Transition | None) -> Rows:
    """``rows`` with row ``index`` replaced, for ``source`` only, by ``changed`` (None deletes it);
    the row's other source states keep the original behaviour."""
    row = rows[index]
    others = tuple(state for state in row.sources if state is not source)
    kept = (replace(row, sources=others),) if others else ()
    mutated = () if changed is None else (replace(changed, sources=(source,)),)
    return (*rows[:index], *mutated, *kept, *rows[index + 1 :])


def _complement(guard: Guard) -> Guard:
    return Guard(f"not ({guard.name})", lambda state, ev: not guard(state, ev))


def _with_action(actions: tuple[ActionKind, ...], added: ActionKind) -> tuple[ActionKind, ...]:
    """``added`` inserted where the spec's order puts it, so only its presence is wrong."""
    order = SPEC_ACTION_ORDER.index
    return tuple(sorted((*actions, added), key=order))


def _row_changes(row: Transition, source: ControlState) -> Iterator[tuple[str, str, Transition | None]]:
    yield "delete-row", "deleted", None
    # Staying put and targeting the source itself are the same row, not a mutant.
    current = source if row.target is None else row.target
    for target in ControlState:
        if target is not current:
            yield "retarget", f"target {target.value}", replace(row, target=target)
    for position, action in enumerate(row.actions):
        dropped = row.actions[:position] + row.actions[position + 1 :]
        yield "drop-action", f"without {action.value}", replace(row, actions=dropped)
    for action in ActionKind:
        if action not in row.actions:
            yield "add-action", f"with {action.value}", replace(row, actions=_with_action(row.actions, action))
    if len(row.actions) > 1:
        yield "reverse-actions", "actions reversed", replace(row, actions=row.actions[::-1])
    for effect in row.effects:
        kept = tuple(other for other in row.effects if other is not effect)
        yield "drop-effect", f"without effect {effect.value}", replace(row, effects=kept)
    if row.ends is not None:
        yield "drop-effect", f"without ending {row.ends}", replace(row, ends=None)
    if row.guard is not ALWAYS:
        yield "guard-complement", "guard complemented", replace(row, guard=_complement(row.guard))
        yield "guard-always", "guard always", replace(row, guard=ALWAYS)


def table_mutants(rows: Rows = REQUEST_TABLE, forbidden: Forbidden = FORBIDDEN) -> Iterator[Mutant]:
    """Every single-change mutant of the table, in a fixed order."""
    for index, row in enumerate(rows):
        for source in row.sources:
            for kind, change, changed in _row_changes(row, source):
                name = f"{_cell(row, source)} ({row.rule}): {change}"
                yield Mutant(kind, name, _with_cell(rows, index, source, changed), forbidden)
    for (state, trigger), rule in forbidden.items():
        fewer = {key: value for key, value in forbidden.items() if key != (state, trigger)}
        cell = f"{state.value} {trigger.value} ({rule})"
        yield Mutant("delete-forbidden", f"{cell}: forbidden entry deleted", rows, fewer)
        no_op = Transition((state,), trigger, ALWAYS, None, (), rule, ignored=True)
        yield Mutant("forbidden-ignored", f"{cell}: ignored instead of refused", (*rows, no_op), fewer)


# --------------------------------------------------------------------------- equivalence

Outcome = tuple[str, ...]


def _outcome(table: CompiledTable, state: RequestState, ev: object) -> tuple[Outcome, RequestState | None]:
    """What a run sees when ``ev`` arrives: refused, a faulty table, or the actions performed."""
    try:
        step = table.step(state, ev)  # type: ignore[arg-type]
    except ProtocolViolation:
        return ("refused",), None
    except TableError:
        return ("no single row",), None
    return tuple(action.value for action in step.actions), step.after


@dataclass(frozen=True)
class Difference:
    mode: Mode
    events: list[str]
    shipped: Outcome
    mutant: Outcome

    def describe(self) -> str:
        return (
            f"{self.mode.value}: after {' -> '.join(self.events[:-1]) or '(start)'}, {self.events[-1]} gives "
            f"{list(self.shipped)} on the shipped table but {list(self.mutant)} on the mutant"
        )


def first_difference(mutant: Mutant, modes: Iterable[Mode] = tuple(Mode)) -> tuple[Difference | None, int]:
    """A shortest run on which the mutant acts differently from the shipped table, or None,
    with the number of state pairs walked."""
    walked = 0
    for mode in modes:
        shipped, changed = CompiledTable(), mutant.table()
        start = (shipped.initial(mode), changed.initial(mode))
        paths: dict[tuple[RequestState, RequestState], list[str]] = {start: []}
        queue = deque([start])
        while queue:
            pair = queue.popleft()
            walked += 1
            for ev in ALL_EVENTS:
                expected, after = _outcome(shipped, pair[0], ev)
                seen, mutant_after = _outcome(changed, pair[1], ev)
                events = [*paths[pair], ev.name]
                if expected != seen:
                    return Difference(mode, events, expected, seen), walked
                if after is None or mutant_after is None:
                    continue
                successor = (after, mutant_after)
                if successor not in paths:
                    if len(paths) > MAX_STATES:
                        return Difference(mode, events, expected, ("too many states to compare",)), walked
                    paths[successor] = events
                    queue.append(successor)
    return None, walked


# --------------------------------------------------------------------------- the score


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    killed_by: tuple[str, ...]
    """The rule IDs of the first violation ``check`` finds; empty for a survivor."""
    difference: Difference | None = None
    pairs_compared: int = 0

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)

    @property
    def equivalent(self) -> bool:
        return not self.killed and self.difference is None


@dataclass
class MutationScore:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def killed(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict.killed]

    @property
    def equivalent(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict.equivalent]

    @property
    def blind_spots(self) -> list[Verdict]:
        """Survivors that some run tells apart from the shipped table."""
        return [verdict for verdict in self.verdicts if not verdict.killed and not verdict.equivalent]

    def by_kind(self) -> dict[str, tuple[int, int, int]]:
        """Mutant kind -> (mutants, killed, equivalent survivors)."""
        counts: dict[str, tuple[int, int, int]] = {}
        for verdict in self.verdicts:
            total, killed, equivalent = counts.get(verdict.mutant.kind, (0, 0, 0))
            counts[verdict.mutant.kind] = (total + 1, killed + verdict.killed, equivalent + verdict.equivalent)
        return counts


# Decode first: it is the mode with the most states, so it kills most mutants soonest.
_KILL_ORDER = (Mode.DECODE, Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE)


def judge(mutant: Mutant) -> Verdict:
    """Run ``check``'s exploration on the mutant; for a survivor, look for a run that tells it apart.
    Exploration stops at the first violation (liveness is only examined when safety holds)."""
    for mode in _KILL_ORDER:
        report = explore(mode, mutant.table(), stop_at_first_violation=True)
        if not report.ok:
            return Verdict(mutant, tuple(sorted({result.rule for result in report.violations()})))
    difference, pairs = first_difference(mutant)
    return Verdict(mutant, (), difference, pairs)


def mutation_score(mutants: Iterable[Mutant] | None = None) -> MutationScore:
    return MutationScore([judge(mutant) for mutant in (table_mutants() if mutants is None else mutants)])
