"""What a fault means to the request it happens in.

The adapter catches what breaks (the engine raising at setup or mid-stream, an
item whose accessors raise, an interrupt passing through the stream) and asks
here which fault it is (:func:`setup_fault`, :func:`stream_fault`), whether the
exception goes on unchanged, and which typed error the request ends with
otherwise (:func:`error_of`, :func:`stream_error`).  The table says which event
each fault is to the request's machine, so the request still ends by the
table's own rows and the adapter only performs the actions.
Faults outside any request (a failing trace sink, a hanging abort or close,
a signal after the loop closed) change no request state and are not listed;
the spec's fault model (section 14) states what the adapter does with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo_backend_protocol.model.chunks import describe_exception
from dynamo_backend_protocol.model.errors import BackendError, DynamoError
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


ITEM_UNREADABLE = fault_event(Fault.ITEM_UNREADABLE)
_DROP = event(EventKind.DROP)


def setup_fault(exc: BaseException) -> FaultResponse:
    """What ``generate`` raising ``exc`` is: an Exception is the engine failing (the caller
    gets its typed error, :func:`error_of`); anything else goes on to the caller unchanged."""
    return FAULT_RESPONSES[Fault.SETUP_RAISED if isinstance(exc, Exception) else Fault.SETUP_INTERRUPTED]


def stream_fault(
    exc: BaseException, cancellation: type[BaseException], consumer_cancelling: bool
) -> FaultResponse | None:
    """What ``exc``, raised while reading the engine's stream, is to the request.

    ``cancellation`` is the I/O framework's cancellation exception, and
    ``consumer_cancelling`` whether the reading task is being cancelled by whoever
    holds it.  That cancellation is the consumer going away, no fault: None (the
    request ends as a drop where the exception leaves the stream).  The engine
    raising an Exception, or GeneratorExit or a cancellation of its own (a
    consumer's close is thrown at a yield, never into a read), is its stream
    failing; any other BaseException is an interrupt.
    """
    if isinstance(exc, Exception | GeneratorExit):
        return FAULT_RESPONSES[Fault.STREAM_RAISED]
    if isinstance(exc, cancellation):
        return None if consumer_cancelling else FAULT_RESPONSES[Fault.STREAM_RAISED]
    return FAULT_RESPONSES[Fault.STREAM_INTERRUPTED]


def stream_error(exc: BaseException, cancellation: type[BaseException]) -> DynamoError:
    """The typed error a request ends with when its engine's stream raised ``exc`` (FAULT-ENGINE-RAISES)."""
    if isinstance(exc, GeneratorExit):
        return DynamoError(BackendError.UNKNOWN, "the engine's stream raised GeneratorExit")
    if isinstance(exc, cancellation):
        return DynamoError(BackendError.CANCELLED, f"the engine's stream raised {type(exc).__name__}")
    return error_of(exc)


def leaving_event(exc: BaseException, cancellation: type[BaseException]) -> Event:
    """The event for an exception leaving the response stream unchanged: the consumer's close
    or cancellation is its drop; anything else (an interrupt, an exception the consumer threw
    in) ends the request as an interrupt does (FAULT-INTERRUPT), without delivering anything."""
    if isinstance(exc, GeneratorExit | cancellation):
        return _DROP
    return fault_event(Fault.STREAM_INTERRUPTED)


def error_name(exc: BaseException) -> str:
    """How a trace names what was raised: a typed error by its kind (``BackendCancelled``),
    anything else by its type."""
    return exc.kind.display if isinstance(exc, DynamoError) else type(exc).__name__


def error_of(exc: BaseException) -> DynamoError:
    """Typed errors keep their kind; anything else becomes ``Unknown`` naming the exception."""
    if isinstance(exc, DynamoError):
        return exc
    return DynamoError(BackendError.UNKNOWN, describe_exception(exc))


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
