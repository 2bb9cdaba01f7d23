"""Step-by-step narration of an event sequence, in sentences for newcomers.

:func:`narrate` replays events through the table and records, per step, the
state before and after, the actions, the rules that decided it and plain
sentences saying what happened.  An event the protocol forbids is narrated
too (which rule forbids it, which events the state would accept) and the
request stays where it was, so the rest of the sequence can still be told.
Pure string building; printing is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.reachability import allowed_events
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.table import ALWAYS, Transition
from dynamo_backend_protocol.model.vocabulary import (
    ALL_EVENTS,
    ActionKind,
    ControlState,
    Event,
    EventKind,
    FinishReason,
    Mode,
)

STATE_MEANING: dict[ControlState, str] = {
    ControlState.IDLE: "generate was called and the engine's stream does not exist yet",
    ControlState.STREAMING: "the stream is live and no cancellation has been observed",
    ControlState.CANCEL_PENDING: "cancellation was observed, and decode mode holds the abort until first-token",
    ControlState.ABORTED: "engine.abort has been called; the stream may still deliver its terminal",
    ControlState.DONE: "the request is over: nothing more is read or forwarded",
}

_EVENT_MEANING: dict[EventKind, str] = {
    EventKind.SETUP: "The engine's generate returned its stream.",
    EventKind.SETUP_FAILED: "The engine's generate failed before any stream existed.",
    EventKind.TOKEN_CHUNK: "The engine's stream yields a chunk that carries token ids.",
    EventKind.EMPTY_CHUNK: "The engine's stream yields a chunk with no token ids (like SGLang's bootstrap handshake).",
    EventKind.ERROR: "The engine's stream raises a typed error.",
    EventKind.END: "The engine's stream ends without ever yielding a terminal item.",
    EventKind.STOP: "The client asks the request to stop (context.stop_generating()).",
    EventKind.KILL: "The request is killed (a kill also counts as a stop).",
    EventKind.FIRST_TOKEN_NOTICE: "The engine calls context.notify_first_token() from a side channel.",
    EventKind.DROP: "The client drops the response stream without stopping the request.",
    EventKind.DISCONNECT: "The remote client goes away; the runtime tells the worker the request was killed.",
}

_ACTION_PHRASE: dict[ActionKind, str] = {
    ActionKind.FORWARD_DATA: "forwards the chunk to the client",
    ActionKind.FORWARD_ERROR: "forwards the error to the client as an error item, its kind intact",
    ActionKind.RETURN_SETUP_ERROR: "returns the setup error to the caller, message intact",
    ActionKind.CALL_ABORT: "calls engine.abort",
    ActionKind.STOP_READING: "stops reading the engine's stream",
    ActionKind.RELEASE_WATCH: "releases the request's cancellation watch",
}


@dataclass(frozen=True)
class NarratedStep:
    number: int
    """1-based position in the sequence."""
    event: Event
    before: RequestState
    after: RequestState
    actions: tuple[ActionKind, ...]
    rules: tuple[str, ...]
    """The deciding rule first, then rules this step visibly upholds."""
    row: Transition | None
    """The row that fired; None when the event was forbidden."""
    ignored: bool
    allowed_instead: tuple[Event, ...]
    """For a forbidden event: what the state would have accepted."""
    sentences: tuple[str, ...]

    @property
    def forbidden(self) -> bool:
        return self.row is None

    @property
    def rule(self) -> str:
        return self.rules[0]


@dataclass(frozen=True)
class Narration:
    mode: Mode
    initial: RequestState
    steps: tuple[NarratedStep, ...]

    @property
    def final(self) -> RequestState:
        return self.steps[-1].after if self.steps else self.initial

    @property
    def forbidden_steps(self) -> tuple[NarratedStep, ...]:
        return tuple(step for step in self.steps if step.forbidden)

    def abort_steps(self) -> tuple[int, ...]:
        return tuple(step.number for step in self.steps if ActionKind.CALL_ABORT in step.actions)

    def text(self) -> str:
        lines = [f"Mode {self.mode.value}. The request starts in {state_phrase(self.initial.control)}."]
        for step in self.steps:
            lines.append("")
            lines.append(f"{step.number}. {step.event.name}")
            lines.extend(f"   {sentence}" for sentence in step.sentences)
        lines.append("")
        lines.append(self.conclusion())
        return "\n".join(lines)

    def conclusion(self) -> str:
        final = self.final
        if final.control is ControlState.DONE:
            where = "The request ends in Done."
        else:
            where = f"After these events the request is still in {final.control.value}: it is not over yet."
        aborts = self.abort_steps()
        if not aborts:
            said = "engine.abort was never called."
        elif len(aborts) == 1:
            said = f"engine.abort was called once, at step {aborts[0]}."
        else:
            said = f"engine.abort was called {len(aborts)} times, at steps {', '.join(map(str, aborts))}."
        refused = self.forbidden_steps
        if refused:
            numbers = ", ".join(str(step.number) for step in refused)
            said += f" The protocol refused step(s) {numbers}."
        return f"{where} {said}"


def state_phrase(control: ControlState) -> str:
    return f"{control.value} ({STATE_MEANING[control]})"


def event_meaning(ev: Event) -> str:
    if ev.kind is not EventKind.TERMINAL:
        return _EVENT_MEANING[ev.kind]
    assert ev.finish_reason is not None
    carries = "that also carries token ids" if ev.with_tokens else "with no token ids"
    return f"The engine's stream yields its terminal chunk, finish_reason '{ev.finish_reason.value}', {carries}."


def _actions_sentence(actions: tuple[ActionKind, ...]) -> str:
    if not actions:
        return "The adapter does nothing visible."
    phrases = [_ACTION_PHRASE[action] for action in actions]
    if len(phrases) == 1:
        return f"The adapter {phrases[0]}."
    return f"The adapter {', then '.join(phrases)}."


def _memory_sentences(before: RequestState, after: RequestState) -> list[str]:
    """What the request now remembers that it did not before."""
    said: list[str] = []
    if after.watching and not before.watching:
        said.append("From now on the adapter watches the request for stop and kill.")
    if after.cancel is not None and before.cancel is None:
        said.append(f"The adapter remembers that the request was cancelled ({after.cancel.value}).")
    # Only decode mode acts on first-token; elsewhere saying so would mislead.
    if after.first_token and not before.first_token and after.mode is Mode.DECODE:
        said.append("First-token is now known.")
    return said


def _why_sentences(step_before: RequestState, ev: Event, row: Transition) -> list[str]:
    """The teaching point of the rows whose outcome depends on mode or history."""
    said: list[str] = []
    if row.guard is not ALWAYS:
        said.append(f"The guard that chose this outcome: {row.guard.name}.")
    if row.rule == "DECODE-DEFER" and ActionKind.CALL_ABORT not in row.actions:
        said.append(
            "Aborting a decode request before its first token can orphan the prefill worker's "
            "in-flight KV transfer, so the abort waits."
        )
    if row.rule == "DECODE-DEFER" and ActionKind.CALL_ABORT in row.actions and ev.signals_first_token:
        said.append("This is the first-token signal the deferred abort was waiting for, so the abort fires now.")
    if row.rule == "DECODE-DROP":
        said.append("The stream ended before first-token, so the deferred abort is abandoned: no abort.")
    if row.rule == "DECODE-TIE":
        said.append(
            "This one item is both first-token and the end of the stream; first-token wins, "
            "so the deferred abort fires before the request ends."
        )
    if ev.kind is EventKind.EMPTY_CHUNK and step_before.mode is Mode.DECODE and not step_before.first_token:
        said.append("A chunk without token ids does not count as first-token.")
    if row.rule == "ABORT-NEEDS-CANCEL":
        said.append("Nobody asked to stop, so engine.abort is not called; per-request cleanup belongs in the stream.")
    return said


def _extra_rules(before: RequestState, ev: Event, actions: tuple[ActionKind, ...]) -> list[str]:
    """Rules beyond the deciding row's that this step visibly upholds."""
    extra: list[str] = []
    if ActionKind.CALL_ABORT in actions:
        extra.append("ABORT-ONCE")
    if (
        ev.kind is EventKind.TERMINAL
        and ev.finish_reason is FinishReason.CANCELLED
        and before.cancel is not None
        and ActionKind.FORWARD_DATA in actions
    ):
        extra.append("STREAM-CANCELLED-TERMINAL")
    if ActionKind.RELEASE_WATCH in actions:
        extra.append("WATCH-RELEASED")
    return extra


def _transition_sentence(before: RequestState, after: RequestState, ignored: bool) -> str:
    if ignored:
        return f"In {before.control.value} this event is ignored: nothing changes."
    if after.control is before.control:
        return f"The request stays in {before.control.value}."
    return f"The request moves from {before.control.value} to {state_phrase(after.control)}."


def rules_sentence(rules: Sequence[str]) -> str:
    decided = f"Decided by {rules[0]}: {summary(rules[0])}."
    upheld = [f"{rule} ({summary(rule)})" for rule in rules[1:]]
    if upheld:
        decided += " Also upholds " + "; ".join(upheld) + "."
    return decided


def narrate(events: Sequence[Event], mode: Mode, table: CompiledTable = DEFAULT_TABLE) -> Narration:
    initial = table.initial(mode)
    state = initial
    steps: list[NarratedStep] = []
    for number, ev in enumerate(events, start=1):
        told = narrate_step(state, ev, number, table)
        steps.append(told)
        state = told.after
    return Narration(mode, initial, tuple(steps))


def narrate_step(
    state: RequestState, ev: Event, number: int = 1, table: CompiledTable = DEFAULT_TABLE
) -> NarratedStep:
    """One event told in ``state``; a forbidden one leaves the request where it was."""
    try:
        fired = table.step(state, ev)
    except ProtocolViolation as violation:
        return _forbidden_step(number, state, ev, violation.rule, table)
    rules = list(dict.fromkeys([fired.rule, *_extra_rules(state, ev, fired.actions)]))
    sentences = [event_meaning(ev), _transition_sentence(state, fired.after, fired.ignored)]
    if not fired.ignored:
        sentences.append(_actions_sentence(fired.actions))
        sentences.extend(_memory_sentences(state, fired.after))
        sentences.extend(_why_sentences(state, ev, fired.row))
    sentences.append(rules_sentence(rules))
    return NarratedStep(
        number, ev, state, fired.after, fired.actions, tuple(rules), fired.row, fired.ignored, (), tuple(sentences)
    )


def _forbidden_step(number: int, state: RequestState, ev: Event, rule: str, table: CompiledTable) -> NarratedStep:
    allowed = tuple(allowed_events(state, table))
    sentences = (
        event_meaning(ev),
        f"NOT ALLOWED: the protocol forbids {ev.name} in {state.control.value} "
        f"(rule {rule}: {summary(rule)}).",
        f"The request stays in {state.control.value}; the adapter does nothing for this event.",
        f"Allowed in {state.control.value}: {describe_events(allowed)}.",
    )
    return NarratedStep(number, ev, state, state, (), (rule,), None, False, allowed, sentences)


_TERMINALS = tuple(ev for ev in ALL_EVENTS if ev.kind is EventKind.TERMINAL)


def describe_events(events: Sequence[Event]) -> str:
    """Event slugs joined by commas; the terminal variants (every finish reason, with
    and without tokens), when all are present, read as one entry."""
    names: list[str] = []
    all_terminals = all(ev in events for ev in _TERMINALS)
    for ev in events:
        if ev.kind is EventKind.TERMINAL and all_terminals:
            if ev is _TERMINALS[0]:
                reasons = "|".join(reason.value for reason in FinishReason)
                names.append(f"terminal:<{reasons}>[+tokens]")
            continue
        names.append(ev.name)
    return ", ".join(names)
