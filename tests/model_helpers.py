"""Small helpers shared by the model tests and the CLI's check tests (not a conftest: import it explicitly).

It sits in tests/, beside conftest.py, because pytest puts that folder on sys.path for every test folder,
so tests/cli can use the same buggy tables as tests/model rather than copies of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from dynamo_backend_protocol.model import (
    ALL_EVENTS,
    DEFAULT_TABLE,
    FORBIDDEN,
    REQUEST_TABLE,
    ActionKind,
    CompiledTable,
    ControlState,
    EventKind,
    Mode,
    ProtocolViolation,
    RequestMachine,
    RequestState,
    Step,
    parse_event,
)
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS

# Short names for the actions, so expected action tuples read like the table.
FWD = ActionKind.FORWARD_DATA
ERR = ActionKind.FORWARD_ERROR
ABORT = ActionKind.CALL_ABORT
STOP_READING = ActionKind.STOP_READING
RELEASE = ActionKind.RELEASE_WATCH
SETUP_ERR = ActionKind.RETURN_SETUP_ERROR


def run(mode: Mode, names: Iterable[str], table: CompiledTable = DEFAULT_TABLE) -> RequestMachine:
    """A fresh machine for ``mode`` after firing the named events in order."""
    machine = RequestMachine(mode, table)
    for name in names:
        machine.fire(parse_event(name))
    return machine


def broken_state_rules(state: RequestState) -> set[str]:
    """Rule IDs of the state invariants that ``state`` violates."""
    return {inv.rule for inv in STATE_INVARIANTS if not inv.holds(state)}


def broken_step_rules(step: Step) -> set[str]:
    """Rule IDs of the step invariants that ``step`` violates."""
    return {inv.rule for inv in STEP_INVARIANTS if not inv.holds(step)}


def can_reach_done(table: CompiledTable, start: RequestState) -> bool:
    """Whether some sequence of allowed events leads from ``start`` to Done.

    ``start`` must be a state produced by ``table`` (each table owns its states).
    """
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        if state.control is ControlState.DONE:
            return True
        for ev in ALL_EVENTS:
            try:
                after = table.step(state, ev).after
            except ProtocolViolation:
                continue
            if after not in seen:
                seen.add(after)
                frontier.append(after)
    return False


def aborted_never_ends() -> tuple[CompiledTable, Mode]:
    """The shipped table with one bug: Aborted refuses every way the stream could end, so an
    aborted request never reaches Done (DONE-EVENTUALLY fails, and the engine's cleanup with it)."""
    endings = {EventKind.TERMINAL, EventKind.ERROR, EventKind.END, EventKind.DROP}
    rows = []
    for row in REQUEST_TABLE:
        if row.trigger in endings and ControlState.ABORTED in row.sources:
            others = tuple(s for s in row.sources if s is not ControlState.ABORTED)
            if others:
                rows.append(replace(row, sources=others))
        else:
            rows.append(row)
    forbidden = dict(FORBIDDEN)
    forbidden.update({(ControlState.ABORTED, kind): "STREAM-EVENT-ORDER" for kind in endings})
    return CompiledTable(tuple(rows), forbidden), Mode.AGGREGATED
