"""Replaying recorded JSON Lines traces through the model.

A trace has one JSON object per fired event, exactly as
:meth:`Step.as_record` writes it: ``request``, ``mode``, ``event``, ``state``
(the control state after the event) and ``actions``.  Extra keys (``rule``,
``ignored``, anything else) are allowed and not compared: the model decides
the rule, the trace only records what the adapter observably did.

Each request is replayed on its own, with the mode of its first line.  A
request *conforms* when every one of its lines shows the state and the actions,
in order, that the model produces.  Otherwise its first divergence is reported
with the rule of the row the model fired (or of the rule that forbids the
event) and the request's later lines are not checked, since the model no
longer knows where the real request is.

A malformed line (not JSON, not an object, a missing field, a field of the
wrong type, an unknown mode, event, state or action) is reported with its line
number.  If the line names its request, that request is marked malformed and
its later lines are skipped for the same reason; other requests are checked
as usual.

Memory is bounded by the number of distinct requests: per request only a
small summary and a reference to an interned model state are kept, never the
history (a plain :class:`RequestMachine` would keep every step).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from dynamo_backend_protocol.model.errors import DynamoError
from dynamo_backend_protocol.model.explore.reachability import allowed_events
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable, ProtocolViolation, TableError
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import (
    ActionKind,
    ControlState,
    Event,
    Mode,
    UnknownEvent,
    parse_event,
)

REQUIRED_FIELDS = ("request", "mode", "event", "state", "actions")
MAX_KEPT_ORPHANS = 100
"""Malformed lines that name no request are counted; only this many are kept for the report."""


@dataclass(frozen=True)
class TraceRecord:
    """One well-formed trace line."""

    request: str
    mode: Mode
    event: Event
    state: ControlState
    actions: tuple[ActionKind, ...]


class MalformedRecord(ValueError):
    """A line that is not a trace record; ``request`` is set when the line names one."""

    def __init__(self, problem: str, request: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.request = request


def parse_record(text: str) -> TraceRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedRecord(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise MalformedRecord(f"expected a JSON object, got {_json_type(data)}")
    request = data.get("request")
    named = request if isinstance(request, str) else None
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise MalformedRecord("missing field(s): " + ", ".join(missing), named)
    for name in ("request", "mode", "event", "state"):
        if not isinstance(data[name], str):
            raise MalformedRecord(f"field {name!r} must be a string, got {_json_type(data[name])}", named)
    actions = data["actions"]
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise MalformedRecord("field 'actions' must be a list of strings", named)
    assert named is not None
    try:
        mode = Mode.parse(data["mode"])
    except DynamoError as error:
        raise MalformedRecord(f"field 'mode': {error.message}", named) from None
    try:
        ev = parse_event(data["event"])
    except UnknownEvent:
        raise MalformedRecord(f"field 'event': unknown event {data['event']!r}", named) from None
    return TraceRecord(named, mode, ev, _parse_state(data["state"], named), _parse_actions(actions, named))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _parse_state(text: str, request: str) -> ControlState:
    for state in ControlState:
        if state.value == text:
            return state
    valid = ", ".join(state.value for state in ControlState)
    raise MalformedRecord(f"field 'state': unknown state {text!r}; valid states: {valid}", request)


_ACTIONS = {action.value: action for action in ActionKind}


def _parse_actions(names: list[str], request: str) -> tuple[ActionKind, ...]:
    actions: list[ActionKind] = []
    for name in names:
        action = _ACTIONS.get(name)
        if action is None:
            valid = ", ".join(_ACTIONS)
            raise MalformedRecord(f"field 'actions': unknown action {name!r}; valid actions: {valid}", request)
        actions.append(action)
    return tuple(actions)


@dataclass(frozen=True)
class Divergence:
    """The first line of a request that the model does not agree with."""

    line: int
    event: Event
    before: ControlState
    observed_state: ControlState
    observed_actions: tuple[ActionKind, ...]
    expected_state: ControlState | None
    """None when the model forbids the event here or the line changed mode."""
    expected_actions: tuple[ActionKind, ...] | None
    rule: str | None
    """The rule of the row the model fired, or of the rule forbidding the event."""
    reason: str
    allowed: tuple[Event, ...] = ()
    """For a forbidden event: what the model accepts in ``before``."""


@dataclass(frozen=True)
class Malformed:
    line: int
    problem: str
    request: str | None


@dataclass
class RequestSummary:
    request: str
    first_line: int
    mode: Mode | None
    """None only when the request's first line was malformed."""
    state: RequestState | None
    checked: int = 0
    """Lines that conformed."""
    skipped: int = 0
    """Lines after the first failure, not checked."""
    divergence: Divergence | None = None
    malformed: Malformed | None = None

    @property
    def conforms(self) -> bool:
        return self.divergence is None and self.malformed is None

    @property
    def verdict(self) -> str:
        if self.divergence is not None:
            return "diverges"
        if self.malformed is not None:
            return "malformed"
        return "conforms"


@dataclass
class TraceReport:
    requests: list[RequestSummary] = field(default_factory=list)
    orphans: list[Malformed] = field(default_factory=list)
    """Malformed lines that name no request (at most :data:`MAX_KEPT_ORPHANS`)."""
    orphan_count: int = 0
    lines: int = 0
    """Non-blank lines read."""

    @property
    def ok(self) -> bool:
        return self.orphan_count == 0 and all(summary.conforms for summary in self.requests)

    def counts(self) -> dict[str, int]:
        counts = {"conforms": 0, "diverges": 0, "malformed": 0}
        for summary in self.requests:
            counts[summary.verdict] += 1
        return counts


class TraceChecker:
    """Feed it lines in order with :meth:`feed`; read :meth:`report` at the end."""

    def __init__(self, table: CompiledTable = DEFAULT_TABLE) -> None:
        self._table = table
        self._requests: dict[str, RequestSummary] = {}
        self._report = TraceReport()

    def feed(self, line: int, text: str) -> None:
        """Check one line; blank lines are skipped without a report."""
        if not text.strip():
            return
        self._report.lines += 1
        try:
            record = parse_record(text)
        except MalformedRecord as error:
            self._malformed(Malformed(line, error.problem, error.request))
            return
        summary = self._requests.get(record.request)
        if summary is None:
            summary = RequestSummary(record.request, line, record.mode, self._table.initial(record.mode))
            self._add(summary)
        if not summary.conforms or summary.state is None:
            summary.skipped += 1
            return
        divergence = self._compare(summary.state, record, line)
        if divergence is not None:
            summary.divergence = divergence
            return
        summary.checked += 1
        summary.state = self._table.step(summary.state, record.event).after

    def reject(self, line: int, problem: str) -> None:
        """A line the reader could not even turn into text (bad encoding, too long)."""
        self._report.lines += 1
        self._malformed(Malformed(line, problem, None))

    def report(self) -> TraceReport:
        return self._report

    def _add(self, summary: RequestSummary) -> None:
        self._requests[summary.request] = summary
        self._report.requests.append(summary)

    def _malformed(self, problem: Malformed) -> None:
        if problem.request is None:
            self._report.orphan_count += 1
            if len(self._report.orphans) < MAX_KEPT_ORPHANS:
                self._report.orphans.append(problem)
            return
        summary = self._requests.get(problem.request)
        if summary is None:
            summary = RequestSummary(problem.request, problem.line, None, None)
            self._add(summary)
        if summary.conforms:
            summary.malformed = problem
        else:
            summary.skipped += 1

    def _compare(self, state: RequestState, record: TraceRecord, line: int) -> Divergence | None:
        observed = (record.state, record.actions)
        if record.mode is not state.mode:
            return Divergence(
                line, record.event, state.control, *observed, None, None, None,
                f"mode changed from {state.mode.value} (the request's first line) to {record.mode.value}",
            )
        try:
            step = self._table.step(state, record.event)
        except ProtocolViolation as violation:
            return Divergence(
                line, record.event, state.control, *observed, None, None, violation.rule,
                "not allowed here",
                tuple(allowed_events(state, self._table)),
            )
        except TableError as error:
            return Divergence(line, record.event, state.control, *observed, None, None, "TABLE-WELL-FORMED", str(error))
        expected_state = step.after.control
        if expected_state is record.state and step.actions == record.actions:
            return None
        if expected_state is not record.state and step.actions != record.actions:
            reason = "state and actions differ"
        elif expected_state is not record.state:
            reason = "state differs"
        else:
            reason = "actions differ"
        return Divergence(line, record.event, state.control, *observed, expected_state, step.actions, step.rule, reason)


def check_lines(lines: Iterable[str], table: CompiledTable = DEFAULT_TABLE) -> TraceReport:
    """Check a whole trace given as lines (numbered from 1)."""
    checker = TraceChecker(table)
    for number, text in enumerate(lines, start=1):
        checker.feed(number, text)
    return checker.report()
