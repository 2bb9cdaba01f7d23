"""The raw engine adapter's machine, told step by step (``explain --machine raw``).

Each step says the event, the state before and after, the adapter's actions,
the rule that decided it and the Dynamo release that rule holds from, so a
reader of an older release's behaviour knows whether it applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynamo_backend_protocol.model.exceptions import ProtocolError, ProtocolViolation
from dynamo_backend_protocol.model.raw_engine import RawEvent, RawMachine
from dynamo_backend_protocol.model.releases import holds_text
from dynamo_backend_protocol.model.rules import summary

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
    machine = RawMachine()
    lines = ["The raw engine adapter (a RawEngine: JSON objects in and out; from Dynamo 1.3.1):"]
    for number, ev in enumerate(events, start=1):
        before = machine.state.describe()
        try:
            actions = machine.fire(ev)
        except ProtocolViolation as violation:
            lines.append(f"{number}. {ev.value} in {before}: not allowed (rule {violation.rule}: "
                         f"{summary(violation.rule)}, {holds_text(violation.rule)}).")
            return "\n".join(lines)
        rule = machine.history[-1].rule
        done = ", ".join(action.value for action in actions) or "nothing"
        lines.append(f"{number}. {ev.value}: {before} -> {machine.state.describe()}; the adapter does {done}. "
                     f"Decided by {rule} ({holds_text(rule)}): {summary(rule)}.")
    if machine.state.phase.value != "Done":
        lines.append(f"The request is still live ({machine.state.describe()}): "
                     "it ends when the engine's generator ends, raises, or the stream goes away.")
    return "\n".join(lines)
