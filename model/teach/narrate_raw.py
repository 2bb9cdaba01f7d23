"""The raw engine adapter's machine, told step by step (``explain --machine raw``).

Each step, as the raw table's own step tells it (:mod:`.phase_narration`),
says the event, the state before and after, the adapter's actions, the rule
that decided it and the Dynamo release that rule holds from, so a reader of
an older release's behaviour knows whether it applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.raw_engine import RawEvent, RawPhase, RawState, raw_table
from dynamo_backend_protocol.model.releases import holds_text
from dynamo_backend_protocol.model.teach.phase_narration import PhaseRefusal, tell_phase_step

RAW_EVENT_NAMES = tuple(event.value for event in RawEvent)


class UnknownRawEvent(ProtocolError, ValueError):
    """A name that is not a raw machine event; the message lists the valid ones."""


def parse_raw_events(text: str) -> list[RawEvent]:
    """``"setup,object,stop,end"`` -> the events; an empty or unknown name is refused by name."""
    events = []
    for position, name in enumerate(text.split(","), start=1):
        name = name.strip()
        if not name:
            raise UnknownRawEvent(f"event {position} is empty; raw events: {', '.join(RAW_EVENT_NAMES)}")
        try:
            events.append(RawEvent(name))
        except ValueError:
            raise UnknownRawEvent(f"unknown raw event {name!r}; raw events: {', '.join(RAW_EVENT_NAMES)}") from None
    return events


def narrate_raw(events: Sequence[RawEvent]) -> str:
    """The numbered steps; a forbidden event ends the telling with the rule that forbids it."""
    table, state = raw_table(), RawState()
    lines = ["The raw engine adapter (a RawEngine: JSON objects in and out; from Dynamo 1.3.1):"]
    for number, ev in enumerate(events, start=1):
        told = tell_phase_step(table, state, ev)
        if isinstance(told, PhaseRefusal):
            lines.append(f"{number}. {told.event} in {told.said_before}: not allowed (rule {told.rule}: "
                         f"{told.summary}, {holds_text(told.rule)}).")
            return "\n".join(lines)
        state = told.after
        done = ", ".join(told.actions) or "nothing"
        lines.append(f"{number}. {told.event}: {told.said_before} -> {told.said_after}; the adapter does {done}. "
                     f"Decided by {told.rule} ({holds_text(told.rule)}): {told.summary}.")
    if state.phase is not RawPhase.DONE:
        lines.append(f"The request is still live ({state.describe()}): "
                     "it ends when the engine's generator ends, raises, or the stream goes away.")
    return "\n".join(lines)
