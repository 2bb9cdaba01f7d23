"""The formal model of the dynamo-backend-common request protocol.

Pure: no asyncio, no I/O, no clocks.  The protocol is the transition table in
:mod:`.table`; :class:`RequestMachine` applies it to one request, the
invariants in :mod:`.invariants` say what must always hold, and
:mod:`.explore` checks them on every reachable state.  The core modules here
never import the readers of the table (:mod:`.explore`, :mod:`.teach`,
:mod:`.traces`).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    **{name: "errors" for name in ("BackendError", "DynamoError")},
    **{name: "exceptions" for name in ("ProtocolViolation", "TableError")},
    **{name: "machine" for name in ("DEFAULT_TABLE", "CompiledTable", "RequestMachine", "Step")},
    "RULES": "rules",
    **{name: "state" for name in ("RequestState", "initial_state")},
    **{name: "table" for name in ("FORBIDDEN", "REQUEST_TABLE", "Transition")},
    **{name: "vocabulary" for name in (
        "ALL_EVENTS", "ActionKind", "CancelCause", "ControlState", "Event", "EventKind", "FinishReason", "Mode",
        "StreamEnd", "UnknownEvent", "event", "parse_event")},
}
"""Where each public name lives: imported on first use, so that importing one small module of the
model (the CLI's error types, say) does not load the tables and the machine."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
