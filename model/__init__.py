"""The formal model of the dynamo-backend-common request protocol.

Pure: no asyncio, no I/O, no clocks.  The protocol is the transition table in
:mod:`.table`; :class:`RequestMachine` applies it to one request, the
invariants in :mod:`.invariants` say what must always hold, and
:mod:`.explore` checks them on every reachable state.  The core modules here
never import the readers of the table (:mod:`.explore`, :mod:`.teach`,
:mod:`.traces`).
"""

from dynamo_backend_protocol.model.errors import BackendError, DynamoError
from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable, RequestMachine, Step
from dynamo_backend_protocol.model.rules import RULES
from dynamo_backend_protocol.model.state import RequestState, initial_state
from dynamo_backend_protocol.model.table import FORBIDDEN, REQUEST_TABLE, Transition
from dynamo_backend_protocol.model.vocabulary import (
    ALL_EVENTS,
    ActionKind,
    CancelCause,
    ControlState,
    Event,
    EventKind,
    FinishReason,
    Mode,
    StreamEnd,
    UnknownEvent,
    event,
    parse_event,
)

__all__ = [
    "ALL_EVENTS",
    "DEFAULT_TABLE",
    "FORBIDDEN",
    "REQUEST_TABLE",
    "RULES",
    "ActionKind",
    "BackendError",
    "CancelCause",
    "CompiledTable",
    "ControlState",
    "DynamoError",
    "Event",
    "EventKind",
    "FinishReason",
    "Mode",
    "ProtocolViolation",
    "RequestMachine",
    "RequestState",
    "Step",
    "StreamEnd",
    "TableError",
    "Transition",
    "UnknownEvent",
    "event",
    "initial_state",
    "parse_event",
]
