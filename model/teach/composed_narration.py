"""What a narrated step of a composed model is, and how a composed narration reads.

The disagg and engine narrators (:mod:`.narrate_disagg`, :mod:`.narrate_engine`)
both produce :class:`ComposedStep` records: the event as written, who it
concerns, the composed state before and after, the adapter's actions, the
rules that decided it, whether the composition refused it, and which
invariants of the composition it breaks (only a counter-example breaks any).
Pure string building.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.vocabulary import ActionKind

X = TypeVar("X")


@dataclass(frozen=True)
class Broken:
    """An invariant a step breaks: the rule it enforces and its name."""

    rule: str
    name: str


def _broken(invariants: Iterable[Invariant[X]]) -> list[Broken]:
    return [Broken(inv.rule, inv.name) for inv in invariants]


@dataclass(frozen=True)
class ComposedStep:
    number: int
    """1-based position in the sequence."""
    event: str
    """As written in the composed syntax (``r1:setup``, ``transfer_started``)."""
    actor: str
    """Whom the event concerns: the request, the transfer, request r1, the engine."""
    before: str
    after: str
    actions: tuple[ActionKind, ...]
    rules: tuple[str, ...]
    """The deciding rule first (for a refused event: the rule that refuses it)."""
    refused: bool
    broken: tuple[Broken, ...]
    """Invariants of the composition this step breaks."""
    sentences: tuple[str, ...]

    @property
    def rule(self) -> str:
        return self.rules[0]

    @property
    def calls_abort(self) -> bool:
        return ActionKind.CALL_ABORT in self.actions


def newly_broken(invariants: Iterable[Invariant[X]], before: X, after: X) -> list[Broken]:
    """State invariants that held before the step and fail after it (a broken one stays broken)."""
    return _broken(inv for inv in invariants if inv.holds(before) and not inv.holds(after))


def failing(invariants: Iterable[Invariant[X]], subject: X) -> list[Broken]:
    return _broken(inv for inv in invariants if not inv.holds(subject))


def breaks_sentences(broken: Sequence[Broken]) -> list[str]:
    return [f"BREAKS {inv.rule} ({inv.name}): {summary(inv.rule)}." for inv in broken]


def refused_sentences(verdict: str, why: str, stays: str, offered: str) -> list[str]:
    """The lines of an event the composition does not take, in the shape one-request narration uses."""
    return [f"{verdict}: {why}", f"{stays}; the adapter does nothing for this event.", f"Offered here: {offered}."]


def first_of(rules: Iterable[str]) -> tuple[str, ...]:
    """Rules in order, each once."""
    return tuple(dict.fromkeys(rules))


def render(opening: Sequence[str], steps: Sequence[ComposedStep], conclusion: Sequence[str]) -> str:
    lines = list(opening)
    for step in steps:
        lines.append("")
        lines.append(f"{step.number}. {step.event}  ({step.actor})")
        lines.extend(f"   {sentence}" for sentence in step.sentences)
    lines.append("")
    lines.extend(conclusion)
    return "\n".join(lines)


def outcome_sentences(steps: Sequence[ComposedStep], who_aborted: Callable[[ComposedStep], str]) -> list[str]:
    """Aborts, refusals and broken invariants over the whole run."""
    aborts = [step for step in steps if step.calls_abort]
    if not aborts:
        said = ["engine.abort was never called."]
    else:
        where = ", ".join(f"{who_aborted(step)}step {step.number}" for step in aborts)
        said = [f"engine.abort was called {_times(len(aborts))}: {where}."]
    refused = [str(step.number) for step in steps if step.refused]
    if refused:
        said.append(f"The composition refused step(s) {', '.join(refused)}.")
    broken = [(step.number, inv) for step in steps for inv in step.broken]
    if broken:
        listed = "; ".join(f"{inv.rule} ({inv.name}) at step {number}" for number, inv in broken)
        said.append(f"BROKEN: {listed}.")
    else:
        said.append("Every invariant of the composition held.")
    return [" ".join(said)]


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
