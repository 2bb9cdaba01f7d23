"""Replaying recorded JSON Lines traces through the model.

A trace has one JSON object per fired event, exactly as
:func:`~.machine.step_record` writes it: ``request``, ``mode``, ``event``, ``state``
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

Memory is bounded by the requests still open (FAULT-TRACE-INPUT): per open
request a small summary and a reference to an interned model state, never the
history.  A request that is settled (it reached Done conforming, or it failed)
stays for the next :data:`SETTLED_WINDOW` settled requests, so late lines of
it (a stop crossing the terminal) are still checked against Done; then its
summary is handed to the checker's ``on_request`` and only the counts remain.
A later line naming it starts a new request of that name.  The adapter's
trace writer makes names unique, so its traces never meet that case.

A line with an ``obs`` field (and no ``event``) is an *observation* of what
crossed a boundary instead (:mod:`model.traces.observed`, the format the
adapter's trace writer writes by default): the model run is inferred from a
request's observations and checked as it goes.  The first line of a request
decides its format; a request mixing both is malformed.

Lines are decoded with msgspec straight into the five fields; only a line
that does not fit is decoded again generically to say what is wrong with it.
No line of any content makes the checker raise: nesting too deep, numbers
too large, invalid UTF-8 are malformed lines like any other.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from dynamo_backend_protocol.model.errors import DynamoError
from dynamo_backend_protocol.model.exceptions import ProtocolError, ProtocolViolation, TableError
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.traces.engine_side import ENGINE_SIDE_ONLY, ENGINE_START, EngineSideRun
from dynamo_backend_protocol.model.traces.observed import (
    OBSERVATIONS,
    START,
    ObservationDivergence,
    ObservationRecord,
    ObservedRun,
    item_problem,
)
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
SETTLED_WINDOW = 4096
"""How many settled requests are kept to check their late lines before they are reported and forgotten."""


@dataclass(frozen=True)
class TraceRecord:
    """One well-formed trace line."""

    request: str
    mode: Mode
    event: Event
    state: ControlState
    actions: tuple[ActionKind, ...]


class MalformedRecord(ProtocolError, ValueError):
    """A line that is not a trace record; ``request`` is set when the line names one."""

    def __init__(self, problem: str, request: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.request = request


class _Fields(msgspec.Struct):
    """The five fields of a well-formed line, as msgspec decodes them (other keys are ignored)."""

    request: str
    mode: str
    event: str
    state: str
    actions: tuple[str, ...]


class _ObservedFields(msgspec.Struct):
    """The fields of an observation line (other keys are ignored)."""

    request: str
    obs: str
    mode: str | None = None
    item: str | None = None
    n: int | None = None
    notices: bool | None = None


_FAST = msgspec.json.Decoder(_Fields)
_FAST_OBSERVED = msgspec.json.Decoder(_ObservedFields)
_MODES = {mode.value: mode for mode in Mode}
_STATES = {state.value: state for state in ControlState}
_EVENTS: dict[str, Event] = {}
_ACTION_LISTS: dict[tuple[str, ...], tuple[ActionKind, ...]] = {}
_ACTION_LIST_CACHE = 1024
"""Distinct action lists remembered; a valid trace has a handful, garbage must not grow the cache."""


def parse_record(text: str | bytes) -> TraceRecord | ObservationRecord:
    """One trace line as a record; raises :class:`MalformedRecord` saying what is wrong, never anything else."""
    try:
        fields = _FAST.decode(text)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        try:
            observed = _FAST_OBSERVED.decode(text)
        except (msgspec.DecodeError, RecursionError, UnicodeError):
            return _parse_generic(text)
        return _observation(observed.request, observed.obs, observed.mode, observed.item, observed.n,
                            observed.notices)
    request = fields.request
    mode = _MODES.get(fields.mode)
    ev = _EVENTS.get(fields.event)
    state = _STATES.get(fields.state)
    actions = _ACTION_LISTS.get(fields.actions)
    if mode is None or ev is None or state is None or actions is None:
        mode = _parse_mode(fields.mode, request)
        ev = _parse_event(fields.event, request)
        state = _parse_state(fields.state, request)
        actions = _parse_actions(fields.actions, request)
    return TraceRecord(request, mode, ev, state, actions)


_ALL_OBSERVATIONS = OBSERVATIONS | ENGINE_SIDE_ONLY


def _observation(
    request: str, obs: str, mode: str | None, item: str | None, n: int | None, notices: bool | None = None
) -> ObservationRecord:
    if obs not in _ALL_OBSERVATIONS:
        raise MalformedRecord(
            f"field 'obs': unknown observation {obs!r}; valid: {', '.join(sorted(_ALL_OBSERVATIONS))}", request
        )
    if obs in (START, ENGINE_START):
        if mode is None:
            raise MalformedRecord(f"field 'mode' is required for {obs}", request)
        _parse_mode(mode, request)
    problem = item_problem(obs, item, n)
    if problem is not None:
        raise MalformedRecord(problem, request)
    return ObservationRecord(request, obs, mode, item, n, notices)


def _observed_generic(data: dict[str, object], named: str | None) -> ObservationRecord:
    if named is None:
        raise MalformedRecord("field 'request' must be a string", None)
    fields: dict[str, str | None] = {}
    for name in ("obs", "mode", "item"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise MalformedRecord(f"field {name!r} must be a string, got {_json_type(value)}", named)
        fields[name] = value
    n = data.get("n")
    if n is not None and type(n) is not int:
        raise MalformedRecord(f"field 'n' must be an integer, got {_json_type(n)}", named)
    notices = data.get("notices")
    if notices is not None and not isinstance(notices, bool):
        raise MalformedRecord(f"field 'notices' must be a boolean, got {_json_type(notices)}", named)
    obs = fields["obs"]
    if obs is None:
        raise MalformedRecord("field 'obs' must be a string, got null", named)
    return _observation(named, obs, fields["mode"], fields["item"], n, notices)


def _parse_generic(text: str | bytes) -> TraceRecord | ObservationRecord:
    """The slow path, for lines msgspec would not take as they are: decode whatever the line holds
    with the standard library (which also takes what msgspec refuses, such as an escaped lone
    surrogate) and name the first thing wrong with it."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord("line is not UTF-8 text") from None
    if "\x00" in text:
        raise MalformedRecord("line contains a NUL byte")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedRecord(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise MalformedRecord("not valid JSON for this checker (nested too deeply)") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise MalformedRecord(f"not valid JSON for this checker ({error})") from None
    if not isinstance(data, dict):
        raise MalformedRecord(f"expected a JSON object, got {_json_type(data)}")
    request = data.get("request")
    named = request if isinstance(request, str) else None
    if "obs" in data and "event" not in data:
        return _observed_generic(data, named)
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
    return TraceRecord(
        named,
        _parse_mode(data["mode"], named),
        _parse_event(data["event"], named),
        _parse_state(data["state"], named),
        _parse_actions(tuple(actions), named),
    )


def _parse_mode(text: str, request: str) -> Mode:
    try:
        return Mode.parse(text)
    except DynamoError as error:
        raise MalformedRecord(f"field 'mode': {error.message}", request) from None


def _parse_event(text: str, request: str) -> Event:
    try:
        ev = parse_event(text)
    except UnknownEvent:
        raise MalformedRecord(f"field 'event': unknown event {text!r}", request) from None
    if text == ev.name:
        _EVENTS[text] = ev
    return ev


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
    state = _STATES.get(text)
    if state is not None:
        return state
    valid = ", ".join(state.value for state in ControlState)
    raise MalformedRecord(f"field 'state': unknown state {text!r}; valid states: {valid}", request)


_ACTIONS = {action.value: action for action in ActionKind}


def _parse_actions(names: tuple[str, ...], request: str) -> tuple[ActionKind, ...]:
    actions: list[ActionKind] = []
    for name in names:
        action = _ACTIONS.get(name)
        if action is None:
            valid = ", ".join(_ACTIONS)
            raise MalformedRecord(f"field 'actions': unknown action {name!r}; valid actions: {valid}", request)
        actions.append(action)
    parsed = tuple(actions)
    if len(_ACTION_LISTS) < _ACTION_LIST_CACHE:
        _ACTION_LISTS[names] = parsed
    return parsed


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


@dataclass(slots=True)
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
    divergence: Divergence | ObservationDivergence | None = None
    malformed: Malformed | None = None
    run: ObservedRun | EngineSideRun | None = None
    """Set for a request recorded as observations: the inferred run and what is still owed
    (an :class:`EngineSideRun` when only the engine's side was recorded)."""

    @property
    def not_judged(self) -> list[str]:
        """For an engine-side request: what its verdict does not cover, the client's side not being observed."""
        return self.run.unobserved() if isinstance(self.run, EngineSideRun) else []

    @property
    def conforms(self) -> bool:
        return self.divergence is None and self.malformed is None

    @property
    def settled(self) -> bool:
        """Reached Done conforming, or failed: its verdict can no longer change."""
        if not self.conforms:
            return True
        if self.run is not None:
            return self.run.state.control is ControlState.DONE and self.run.quiet
        return self.state is not None and self.state.control is ControlState.DONE

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
    """Every request's summary when the checker collects them (``on_request`` not given)."""
    orphans: list[Malformed] = field(default_factory=list)
    """Malformed lines that name no request (at most :data:`MAX_KEPT_ORPHANS`)."""
    orphan_count: int = 0
    lines: int = 0
    """Non-blank lines read."""
    verdicts: dict[str, int] = field(default_factory=lambda: {"conforms": 0, "diverges": 0, "malformed": 0})
    """How many requests got each verdict."""

    @property
    def ok(self) -> bool:
        """Every request conforms, no line is malformed, and there was something to check."""
        return (
            self.lines > 0
            and self.orphan_count == 0
            and self.verdicts["diverges"] == 0
            and self.verdicts["malformed"] == 0
        )

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())

    def counts(self) -> dict[str, int]:
        return dict(self.verdicts)


RequestSink = Callable[[RequestSummary], None]


class TraceChecker:
    """Feed it lines in order with :meth:`feed`; read :meth:`report` at the end.

    Each request's summary goes to ``on_request`` once its verdict is final
    (see the module's note on memory); without ``on_request`` the report
    collects them in :attr:`TraceReport.requests`.
    """

    def __init__(self, table: CompiledTable = DEFAULT_TABLE, on_request: RequestSink | None = None) -> None:
        self._table = table
        self._open: dict[str, RequestSummary] = {}
        self._settled: OrderedDict[str, RequestSummary] = OrderedDict()
        self._initial = {mode: table.initial(mode) for mode in Mode}
        self._report = TraceReport()
        self._on_request = self._report.requests.append if on_request is None else on_request
        self._finished = False

    def feed(self, line: int, text: str | bytes) -> None:
        """Check one line; blank lines are skipped without a report."""
        try:
            record = parse_record(text)
        except MalformedRecord as error:
            if not text.strip():
                return
            self._report.lines += 1
            self._malformed(Malformed(line, error.problem, error.request))
            return
        self._report.lines += 1
        if isinstance(record, ObservationRecord):
            self._feed_observation(line, record)
            return
        name = record.request
        summary = self._open.get(name)
        if summary is None:
            summary = self._settled.get(name)
            if summary is None:
                summary = RequestSummary(name, line, record.mode, self._initial[record.mode])
                self._open[name] = summary
        state = summary.state
        if not summary.conforms or state is None:
            summary.skipped += 1
            return
        if summary.run is not None:
            self._mixed(summary, line)
            return
        # The common case first: the step is cached on the (interned) state and the line agrees.
        step = state.successors.get(record.event) if record.mode is state.mode else None
        if step is not None and step.after.control is record.state and step.actions == record.actions:
            summary.checked += 1
            summary.state = step.after
            if step.after.control is ControlState.DONE and name in self._open:
                self._settle(summary)
            return
        divergence = self._compare(state, record, line)
        if divergence is not None:
            summary.divergence = divergence
        else:
            summary.checked += 1
            summary.state = self._table.step(state, record.event).after
        if summary.settled and name in self._open:
            self._settle(summary)

    def _feed_observation(self, line: int, record: ObservationRecord) -> None:
        name = record.request
        summary = self._open.get(name) or self._settled.get(name)
        if summary is None:
            if record.obs not in (START, ENGINE_START):
                self._malformed(Malformed(
                    line, f"the request's first observation must be {START} (or {ENGINE_START} for a trace "
                    "recorded at the engine's side)", name,
                ))
                return
            assert record.mode is not None
            mode = Mode.parse(record.mode)
            initial = self._initial[mode]
            started: ObservedRun | EngineSideRun = (
                ObservedRun(initial) if record.obs == START else EngineSideRun(initial, notices=bool(record.notices))
            )
            self._open[name] = RequestSummary(name, line, mode, initial, checked=1, run=started)
            return
        run = summary.run
        if not summary.conforms:
            summary.skipped += 1
            return
        if run is None:
            self._mixed(summary, line)
            return
        divergence = run.observe(self._table, line, record)
        summary.state = run.state
        if divergence is not None:
            summary.divergence = divergence
        else:
            summary.checked += 1
        if summary.settled and name in self._open:
            self._settle(summary)

    def _mixed(self, summary: RequestSummary, line: int) -> None:
        summary.malformed = Malformed(line, "the request mixes step and observation lines", summary.request)
        if summary.request in self._open:
            self._settle(summary)

    def reject(self, line: int, problem: str) -> None:
        """A line the reader could not even turn into text (bad encoding, too long)."""
        self._report.lines += 1
        self._malformed(Malformed(line, problem, None))

    def report(self) -> TraceReport:
        """The report; the requests still held are reported now, in the order they first appeared."""
        if not self._finished:
            self._finished = True
            held = sorted([*self._settled.values(), *self._open.values()], key=lambda summary: summary.first_line)
            self._settled.clear()
            self._open.clear()
            for summary in held:
                if summary.run is not None and summary.conforms:
                    summary.divergence = summary.run.unpaid()
                self._emit(summary)
        return self._report

    def _settle(self, summary: RequestSummary) -> None:
        del self._open[summary.request]
        self._settled[summary.request] = summary
        if len(self._settled) > SETTLED_WINDOW:
            self._emit(self._settled.popitem(last=False)[1])

    def _emit(self, summary: RequestSummary) -> None:
        self._report.verdicts[summary.verdict] += 1
        self._on_request(summary)

    def _malformed(self, problem: Malformed) -> None:
        if problem.request is None:
            self._report.orphan_count += 1
            if len(self._report.orphans) < MAX_KEPT_ORPHANS:
                self._report.orphans.append(problem)
            return
        name = problem.request
        summary = self._open.get(name) or self._settled.get(name)
        if summary is None:
            summary = RequestSummary(name, problem.line, None, None)
            self._open[name] = summary
        if summary.conforms:
            summary.malformed = problem
            if name in self._open:
                self._settle(summary)
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
            # Only a divergence lists what was allowed instead: the explorers stay out of a clean run's start-up.
            from dynamo_backend_protocol.model.explore.reachability import allowed_events

            return Divergence(
                line, record.event, state.control, *observed, None, None, violation.rule,
                "not allowed here",
                tuple(allowed_events(state, self._table)),
            )
        except TableError as error:
            return Divergence(line, record.event, state.control, *observed, None, None, error.rule, str(error))
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


def check_lines(lines: Iterable[str | bytes], table: CompiledTable = DEFAULT_TABLE) -> TraceReport:
    """Check a whole trace given as lines (numbered from 1)."""
    checker = TraceChecker(table)
    for number, text in enumerate(lines, start=1):
        checker.feed(number, text)
    return checker.report()
