"""What a fault means to the request it happens in.

The adapter catches what breaks (the engine raising at setup or mid-stream, an
item whose accessors raise, an interrupt passing through the stream); this
table says which event each fault is to the request's machine, so the request
still ends by the table's own rows and the adapter only performs the actions.
Faults outside any request (a failing trace sink, a hanging abort or close,
a signal after the loop closed) change no request state and are not listed;
the spec's fault model (section 14) states what the adapter does with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo_backend_protocol.model.invariants import LIVE, Invariant
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import (
    FORWARDS,
    ActionKind,
    ControlState,
    Event,
    EventKind,
    Slug,
    event,
)

FAULT_ENGINE_RAISES = "FAULT-ENGINE-RAISES"
FAULT_INTERRUPT = "FAULT-INTERRUPT"


class Fault(Slug):
    SETUP_RAISED = "setup raised"
    """``generate`` raised, or produced nothing that is an async iterator."""
    SETUP_INTERRUPTED = "setup interrupted"
    """A BaseException (the caller's cancellation, KeyboardInterrupt, SystemExit) during setup."""
    STREAM_RAISED = "stream raised"
    """Reading the engine's stream raised an Exception, or the engine itself raised CancelledError or GeneratorExit."""
    ITEM_UNREADABLE = "item unreadable"
    """Reading an item's fields raised (a hostile mapping, a token whose repr raises, an array as token_ids)."""
    STREAM_INTERRUPTED = "stream interrupted"
    """A BaseException other than the consumer's drop passed through the stream (KeyboardInterrupt, SystemExit)."""


@dataclass(frozen=True)
class FaultResponse:
    fault: Fault
    event: Event
    """What the fault is to the request's machine."""
    propagates: bool
    """The exception goes on unchanged to whoever called; otherwise a typed error is delivered instead."""
    rule: str

    @property
    def at_setup(self) -> bool:
        return self.event.kind is EventKind.SETUP_FAILED


FAULT_RESPONSES: dict[Fault, FaultResponse] = {
    response.fault: response
    for response in (
        FaultResponse(Fault.SETUP_RAISED, event(EventKind.SETUP_FAILED), False, FAULT_ENGINE_RAISES),
        FaultResponse(Fault.SETUP_INTERRUPTED, event(EventKind.SETUP_FAILED), True, FAULT_INTERRUPT),
        FaultResponse(Fault.STREAM_RAISED, event(EventKind.ERROR), False, FAULT_ENGINE_RAISES),
        FaultResponse(Fault.ITEM_UNREADABLE, event(EventKind.ERROR), False, FAULT_ENGINE_RAISES),
        # The consumer will see the interrupt, not an item: the request ends as if dropped.
        FaultResponse(Fault.STREAM_INTERRUPTED, event(EventKind.DROP), True, FAULT_INTERRUPT),
    )
}


def fault_event(fault: Fault) -> Event:
    """The event the adapter fires for ``fault``."""
    return FAULT_RESPONSES[fault].event


@dataclass(frozen=True)
class FaultCase:
    """One fault happening in one state where it can happen."""

    state: RequestState
    response: FaultResponse

    @property
    def step(self) -> Step:
        return DEFAULT_TABLE.step(self.state, self.response.event)


def fault_can_happen(state: RequestState, response: FaultResponse) -> bool:
    """Setup faults happen before the stream exists; stream faults while it is live."""
    return state.control is ControlState.IDLE if response.at_setup else state.control in LIVE


def _ends_the_request(step: Step) -> bool:
    return step.after.control is ControlState.DONE and not step.after.watching


def engine_fault_ends_the_request_with_one_error(case: FaultCase) -> bool:
    if case.response.rule != FAULT_ENGINE_RAISES:
        return True
    step = case.step
    delivered = ActionKind.RETURN_SETUP_ERROR if case.response.at_setup else ActionKind.FORWARD_ERROR
    return (
        _ends_the_request(step)
        and step.actions.count(delivered) == 1
        and ActionKind.FORWARD_DATA not in step.actions
        and (case.response.at_setup or ActionKind.STOP_READING in step.actions)
    )


def interrupt_ends_the_request_without_delivering(case: FaultCase) -> bool:
    if case.response.rule != FAULT_INTERRUPT:
        return True
    step = case.step
    # The interrupt itself is what the caller gets (at setup, it is the setup error the
    # caller sees raised): no item may be forwarded in its place, and no abort starts.
    return (
        _ends_the_request(step)
        and not any(action in FORWARDS for action in step.actions)
        and ActionKind.CALL_ABORT not in step.actions
    )


def _in_every_fault(case_holds: Callable[[FaultCase], bool]) -> Callable[[RequestState], bool]:
    def holds(state: RequestState) -> bool:
        return all(
            case_holds(FaultCase(state, response))
            for response in FAULT_RESPONSES.values()
            if fault_can_happen(state, response)
        )

    return holds


FAULT_INVARIANTS: tuple[Invariant[RequestState], ...] = tuple(
    Invariant(rule, case_holds.__name__, _in_every_fault(case_holds))
    for rule, case_holds in (
        (FAULT_ENGINE_RAISES, engine_fault_ends_the_request_with_one_error),
        (FAULT_INTERRUPT, interrupt_ends_the_request_without_delivering),
    )
)
"""State invariants: in this state, every fault that can happen ends the request as its rule says.
The explorer checks them on every reachable state with the table's own invariants."""
