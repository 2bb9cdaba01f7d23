"""Narration of a decode request composed with its prefill peer's KV transfer.

Each event goes through :func:`..disagg.disagg_step`; a request event is also
told as one-request narration tells it (:func:`.narrate.narrate_step`), and
what the transfer adds is said beside it: the first token waits for the
transfer, an abort while it is in flight orphans it, and the deferral is what
keeps that from happening.  An event the composition does not offer
(NotEnabled) or the protocol forbids is told too, with the rule, and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model.disagg import (
    ABORT_ORPHANS,
    DISAGG_STATE_INVARIANTS,
    FIRST_TOKEN_NEEDS,
    NO_ORPHANED_TRANSFER,
    REQUEST_STREAM_EXISTS,
    TRANSFER,
    TRANSFER_TABLE,
    DisaggEvent,
    DisaggState,
    DisaggStep,
    TransferEvent,
    TransferPhase,
    disagg_step,
    initial_disagg_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled, ProtocolViolation
from dynamo_backend_protocol.model.explore.disagg import DISAGG_EVENTS
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.teach.composed_events import disagg_event_name
from dynamo_backend_protocol.model.teach.composed_narration import (
    Broken,
    ComposedStep,
    breaks_sentences,
    failing,
    first_of,
    newly_broken,
    outcome_sentences,
    refused_sentences,
    render,
)
from dynamo_backend_protocol.model.teach.narrate import (
    describe_events,
    event_meaning,
    narrate_step,
    rules_sentence,
    state_phrase,
)
from dynamo_backend_protocol.model.vocabulary import ControlState, Event

PHASE_MEANING: dict[TransferPhase, str] = {
    TransferPhase.PENDING: "the decode request exists and its KV cache has not started to arrive",
    TransferPhase.IN_FLIGHT: "the prefill worker's KV blocks are arriving",
    TransferPhase.COMPLETED: "the cache has arrived; the decode engine can compute the first token",
    TransferPhase.FAILED: "the cache will not arrive",
    TransferPhase.ORPHANED: "the request was aborted while its cache was still arriving",
}

_TRANSFER_MEANING: dict[TransferEvent, str] = {
    TransferEvent.STARTED: "The decode worker starts pulling the prefill worker's KV blocks (a NIXL transfer).",
    TransferEvent.COMPLETED: "The KV transfer completes: the prefill's cache is in the decode engine.",
    TransferEvent.FAILED: "The KV transfer fails: the cache never arrives.",
}

_COMPOSITION = f"the composition of rule {NO_ORPHANED_TRANSFER}"


def describe(state: DisaggState) -> str:
    return f"request {state.request.control.value}, transfer {state.transfer.value}"


def phase_phrase(phase: TransferPhase) -> str:
    return f"{phase.value} ({PHASE_MEANING[phase]})"


@dataclass(frozen=True)
class DisaggNarration:
    initial: DisaggState
    steps: tuple[ComposedStep, ...]
    final: DisaggState

    def text(self) -> str:
        opening = [
            "Mode decode: a decode request with its prefill peer's KV transfer.",
            f"The request starts in {state_phrase(self.initial.request.control)};",
            f"the transfer is {phase_phrase(self.initial.transfer)}.",
        ]
        return render(opening, self.steps, [self.conclusion()])

    def conclusion(self) -> str:
        final = self.final
        if final.request.control is ControlState.DONE:
            where = "The request ends in Done"
        else:
            where = f"After these events the request is still in {final.request.control.value}"
        [outcome] = outcome_sentences(self.steps, lambda _step: "at ")
        return f"{where}; the transfer ends {final.transfer.value}. {outcome}"


def narrate_disagg(events: Sequence[DisaggEvent], table: CompiledTable = DEFAULT_TABLE) -> DisaggNarration:
    initial = initial_disagg_state(table)
    state = initial
    steps: list[ComposedStep] = []
    for number, ev in enumerate(events, start=1):
        told, state = _narrate(table, state, ev, number)
        steps.append(told)
    return DisaggNarration(initial, tuple(steps), state)


def _narrate(
    table: CompiledTable, state: DisaggState, ev: DisaggEvent, number: int
) -> tuple[ComposedStep, DisaggState]:
    try:
        fired = disagg_step(table, state, ev)
    except NotEnabled as refusal:
        return _refused(table, state, ev, number, "NOT OFFERED", _not_offered_why(state, ev), refusal.rule)
    except ProtocolViolation as violation:
        assert isinstance(ev, Event)
        why = f"the protocol forbids {ev.name} in {state.request.control.value} (rule {violation.rule}: "
        why += f"{summary(violation.rule)})."
        return _refused(table, state, ev, number, "NOT ALLOWED", why, violation.rule)
    if isinstance(ev, TransferEvent):
        return _transfer_step(fired, ev, number), fired.after
    return _request_step(table, fired, ev, number), fired.after


def _transfer_step(fired: DisaggStep, ev: TransferEvent, number: int) -> ComposedStep:
    before, after = fired.before, fired.after
    row = TRANSFER.select(before, ev)
    sentences = [
        _TRANSFER_MEANING[ev],
        f"Before: {describe(before)}.",
        f"The transfer moves from {before.transfer.value} to {phase_phrase(after.transfer)}.",
        "The adapter does nothing visible: the transfer runs between the two workers.",
    ]
    if row.guard is REQUEST_STREAM_EXISTS:
        sentences.append("It could start because the request's stream exists: the decode engine pulls the cache.")
    broken = _broken(fired)
    sentences += [f"After: {describe(after)}.", *breaks_sentences(broken)]
    sentences.append(
        f"Decided by the transfer table row {before.transfer.value} --{ev.value}--> {after.transfer.value} "
        f"({_COMPOSITION}: {summary(NO_ORPHANED_TRANSFER)})."
    )
    return ComposedStep(number, ev.value, "the transfer", describe(before), describe(after), (),
                        (NO_ORPHANED_TRANSFER,), False, tuple(broken), tuple(sentences))


def _request_step(table: CompiledTable, fired: DisaggStep, ev: Event, number: int) -> ComposedStep:
    before, after = fired.before, fired.after
    told = narrate_step(before.request, ev, number, table)
    rules = list(told.rules)
    sentences = [told.sentences[0], f"Before: {describe(before)}.", *told.sentences[1:-1]]
    if ev.signals_first_token and not told.ignored:
        sentences.append("It can come now because the transfer completed: the first token is computed from the "
                         "transferred cache.")
    if after.transfer is TransferPhase.ORPHANED and before.transfer is not TransferPhase.ORPHANED:
        sentences.append("The abort fires while the KV transfer is in flight: the transfer is orphaned, its memory "
                         "pulled out from under it.")
    elif before.transfer in ABORT_ORPHANS and after.request.cancel is not None and not after.request.aborts:
        sentences.append(f"The transfer is still {before.transfer.value} and no abort fires, so it is not orphaned.")
        rules.append(NO_ORPHANED_TRANSFER)
    broken = _broken(fired)
    sentences += [f"After: {describe(after)}.", *breaks_sentences(broken), rules_sentence(first_of(rules))]
    return ComposedStep(number, ev.name, "the request", describe(before), describe(after), fired.actions,
                        first_of(rules), False, tuple(broken), tuple(sentences))


def _broken(fired: DisaggStep) -> list[Broken]:
    broken = newly_broken(DISAGG_STATE_INVARIANTS, fired.before, fired.after)
    if fired.request_step is not None:
        broken += newly_broken(STATE_INVARIANTS, fired.before.request, fired.after.request)
        broken += failing(STEP_INVARIANTS, fired.request_step)
    return broken


def _not_offered_why(state: DisaggState, ev: DisaggEvent) -> str:
    if isinstance(ev, TransferEvent):
        rows = [row for row in TRANSFER_TABLE if row.trigger is ev]
        sources = [source for row in rows for source in row.sources]
        if state.transfer in sources:
            return (f"the transfer is pulled by the decode engine, so it starts only once the request's stream "
                    f"exists, and the request is in {state.request.control.value} ({_COMPOSITION}).")
        phases = " or ".join(source.value for source in sources)
        return f"the transfer table takes {ev.value} only in phase {phases}, and the transfer is " \
               f"{state.transfer.value} ({_COMPOSITION})."
    return (f"{ev.name} would be the first token, which is computed from the transferred cache: it needs the "
            f"transfer {FIRST_TOKEN_NEEDS.value}, and the transfer is {state.transfer.value} ({_COMPOSITION}).")


def _refused(
    table: CompiledTable, state: DisaggState, ev: DisaggEvent, number: int, verdict: str, why: str, rule: str
) -> tuple[ComposedStep, DisaggState]:
    meaning = _TRANSFER_MEANING[ev] if isinstance(ev, TransferEvent) else event_meaning(ev)
    stays = f"Nothing moves: {describe(state)}"
    sentences = [meaning, *refused_sentences(verdict, why, stays, offered(table, state))]
    name = disagg_event_name(ev)
    return ComposedStep(number, name, "the transfer" if isinstance(ev, TransferEvent) else "the request",
                        describe(state), describe(state), (), (rule,), True, (), tuple(sentences)), state


def offered(table: CompiledTable, state: DisaggState) -> str:
    """Every event the composition takes in ``state``: the request's, then the transfer's."""
    requests: list[Event] = []
    transfers: list[str] = []
    for ev in DISAGG_EVENTS:
        try:
            disagg_step(table, state, ev)
        except (NotEnabled, ProtocolViolation):
            continue
        if isinstance(ev, TransferEvent):
            transfers.append(ev.value)
        else:
            requests.append(ev)
    listed = [describe_events(requests)] if requests else []
    return ", ".join([*listed, *transfers]) or "nothing"

