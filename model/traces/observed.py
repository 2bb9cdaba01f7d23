"""Inferring the model run from an observation trace, and checking it against the table.

An observation line records one thing that crossed a boundary of the adapter,
seen from outside it: ``{"request": ..., "obs": ..., ...}``.  The boundaries
and what crosses them:

- the runtime (``client.*``): ``client.generate`` (first line of a request,
  with its ``mode``), ``client.setup_error`` (generate raised to the caller),
  ``client.item`` (the consumer received an item: ``item`` is ``data`` with
  ``n``, the position of the engine item it is, or ``error``), ``client.end``
  (the consumer's stream ended), ``client.raise`` (its read raised instead),
  ``client.drop`` (it closed or let go of the stream);
- the engine (``engine.*``): ``engine.setup`` / ``engine.setup_failed`` (what
  ``generate`` produced), ``engine.item`` (an item it yielded: ``item`` is the
  event it stands for, or ``malformed``; ``n`` its position), ``engine.raise``,
  ``engine.end`` (its stream was exhausted), ``engine.interrupt`` (a
  BaseException came out of it), ``engine.cancel`` (a read of it was
  cancelled by the consumer's task), and the calls it received:
  ``engine.abort`` and ``engine.close`` (its stream's ``aclose``);
- the context (``context.stop``, ``context.kill``, ``context.first_token``).

The inputs (what the engine produced, the context's signals, the consumer
leaving) are the model's events, in the order observed; firing them gives the
actions the adapter owes, and the outputs must pay exactly those: every
forward reaches the consumer in order before the engine is read again, each
owed abort and close reaches the engine, nothing is delivered or called that
is not owed.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo_backend_protocol.model.chunks import classify_item
from dynamo_backend_protocol.model.exceptions import ProtocolViolation, TableError
from dynamo_backend_protocol.model.machine import CompiledTable, Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import (
    ENGINE_STREAM_KINDS,
    ActionKind,
    ControlState,
    Event,
    EventKind,
    Mode,
    UnknownEvent,
    event,
    parse_event,
)

START = "client.generate"
MALFORMED_ITEM = "malformed"

_INPUTS: dict[str, Event] = {
    "engine.setup": event(EventKind.SETUP),
    "engine.setup_failed": event(EventKind.SETUP_FAILED),
    "engine.raise": event(EventKind.ERROR),
    "engine.end": event(EventKind.END),
    "engine.interrupt": event(EventKind.DROP),
    "engine.cancel": event(EventKind.DROP),
    "client.drop": event(EventKind.DROP),
    "context.stop": event(EventKind.STOP),
    "context.kill": event(EventKind.KILL),
    "context.first_token": event(EventKind.FIRST_TOKEN_NOTICE),
}
_ENGINE_READS = frozenset({"engine.item", "engine.raise", "engine.end", "engine.interrupt", "engine.cancel"})
_OUTPUTS = frozenset(
    {"engine.abort", "engine.close", "client.item", "client.setup_error", "client.end", "client.raise"}
)
OBSERVATIONS: frozenset[str] = frozenset({START, "engine.item", *_INPUTS, *_OUTPUTS})
"""Every observation name a line may carry."""
ITEM_KINDS = ("data", "error")


@dataclass(frozen=True)
class ObservationRecord:
    """One well-formed observation line."""

    request: str
    obs: str
    mode: str | None = None
    item: str | None = None
    n: int | None = None
    notices: bool | None = None
    """On an engine-side first line: whether side-channel first-token notices are recorded."""


@dataclass(frozen=True)
class ObservationDivergence:
    """The first observation of a request that the model's run does not agree with."""

    line: int
    observation: str
    before: ControlState
    reason: str
    expected: str
    observed: str
    rule: str | None
    owed_at: int | None = None
    """The line whose step owed what was (not) observed, when it is another line."""


@dataclass(frozen=True)
class Owed:
    """What a step of the model owes the other side of the boundary, and the line whose step owes it."""

    line: int
    rule: str
    what: str

    @classmethod
    def by(cls, line: int, step: Step) -> Owed:
        return cls(line, step.rule, f"{step.event.name} in {step.before.control.value} -> {step.after.control.value}")


def step_or_divergence(
    table: CompiledTable, state: RequestState, ev: Event, line: int, obs: str
) -> Step | ObservationDivergence:
    """The model's step for ``ev`` observed as ``obs`` on ``line``, or the divergence its refusal is: an
    event the table forbids in ``state``, or a faulty table."""
    try:
        return table.step(state, ev)
    except ProtocolViolation as violation:
        forbidden = f"event {ev.name} is not allowed in {state.control.value}"
        return ObservationDivergence(line, obs, state.control, forbidden, "an event the model allows here", obs,
                                     violation.rule)
    except TableError as error:
        return ObservationDivergence(line, obs, state.control, str(error), "a well-formed table", obs, error.rule)


@dataclass(slots=True)
class ObservedRun:
    """What the model's run of one request is at, and what the adapter still owes it."""

    state: RequestState
    forward: tuple[str, int | None, Owed] | None = None
    abort: Owed | None = None
    close: Owed | None = None
    setup_error: Owed | None = None
    aborts: int = 0
    dropped: bool = False
    discarded_after_drop: bool = False
    client_over: bool = False

    @property
    def quiet(self) -> bool:
        """Nothing owed and the consumer's side is over: the verdict cannot change."""
        return (
            self.forward is None and self.abort is None and self.close is None and self.setup_error is None
            and self.client_over
        )

    def observe(self, table: CompiledTable, line: int, record: ObservationRecord) -> ObservationDivergence | None:
        """Apply one observation; the divergence it shows, if any."""
        obs = record.obs
        if obs == START:
            return self._diverges(line, obs, "the request was started twice", "nothing", obs, "STREAM-EVENT-ORDER")
        if obs in _OUTPUTS:
            return self._output(line, record)
        ev = item_event(record.item) if obs == "engine.item" else _INPUTS[obs]
        if obs in _ENGINE_READS or obs == "client.drop":
            pending = self.forward
            if pending is not None and not (obs == "client.drop" and self.state.control is ControlState.DONE):
                kind, _, owed = pending
                return self._diverges(
                    line, obs, f"the {kind} item owed since line {owed.line} never reached the consumer",
                    f"the consumer receives it ({owed.what})", obs, owed.rule, owed.line,
                )
        if obs in _ENGINE_READS and self.dropped and not self.discarded_after_drop and self.close is not None:
            # The read that was pending when the consumer dropped: its result is discarded.
            self.discarded_after_drop = True
            return None
        step = step_or_divergence(table, self.state, ev, line, obs)
        if isinstance(step, ObservationDivergence):
            return step
        owed = Owed.by(line, step)
        for action in step.actions:
            if action is ActionKind.FORWARD_DATA:
                self.forward = ("data", record.n if obs == "engine.item" else None, owed)
            elif action is ActionKind.FORWARD_ERROR:
                self.forward = ("error", None, owed)
            elif action is ActionKind.CALL_ABORT:
                self.abort = owed
            elif action is ActionKind.STOP_READING:
                self.close = owed
            elif action is ActionKind.RETURN_SETUP_ERROR:
                self.setup_error = owed
        if ev.kind is EventKind.DROP and self.state.control is not ControlState.DONE:
            self.dropped = True
        if obs == "client.drop":
            self.client_over = True
        self.state = step.after
        return None

    def _output(self, line: int, record: ObservationRecord) -> ObservationDivergence | None:
        obs = record.obs
        if obs == "engine.abort":
            owed = self.abort
            if owed is None:
                if self.aborts:
                    rule = "ABORT-ONCE"
                elif self.state.cancel is None:
                    rule = "ABORT-NEEDS-CANCEL"
                else:
                    rule = "DECODE-DEFER"
                return self._diverges(line, obs, "engine.abort was called but the model owes no abort",
                                      "no call of engine.abort", obs, rule)
            self.abort, self.aborts = None, self.aborts + 1
            return None
        if obs == "engine.close":
            if self.close is None:
                return self._diverges(line, obs, "the engine's stream was closed but the model did not stop reading",
                                      "the stream kept open", obs, "STREAM-FORWARD-ORDER")
            self.close = None
            return None
        if obs == "client.setup_error":
            if self.setup_error is None:
                return self._diverges(line, obs, "the caller got a setup error the model does not return",
                                      "no setup error", obs, "STREAM-SETUP-FAILURE")
            self.setup_error, self.client_over = None, True
            return None
        if obs == "client.item":
            return self._received(line, record)
        # client.end or client.raise: the consumer's stream is over.
        pending = self.forward
        if pending is not None:
            kind, _, owed = pending
            return self._diverges(
                line, obs, f"the consumer's stream ended without the {kind} item owed since line {owed.line}",
                f"the consumer receives it ({owed.what})", obs, owed.rule, owed.line,
            )
        if self.state.control is not ControlState.DONE:
            return self._diverges(line, obs, f"the consumer's stream ended while the request is {self.state.control}",
                                  "the stream goes on until the request is Done", obs, "DONE-WHEN-ENDED")
        self.client_over = True
        return None

    def _received(self, line: int, record: ObservationRecord) -> ObservationDivergence | None:
        got = f"client.item {record.item}" + ("" if record.n is None else f" #{record.n}")
        pending = self.forward
        if pending is None:
            return self._diverges(line, record.obs, "the consumer received an item the model does not forward",
                                  "no item", got, "STREAM-FORWARD-ORDER")
        kind, position, owed = pending
        if kind != record.item or (kind == "data" and position != record.n):
            wanted = f"client.item {kind}" + ("" if position is None else f" #{position}")
            return self._diverges(line, record.obs, f"the consumer received another item than the one owed since "
                                  f"line {owed.line}", wanted, got, owed.rule, owed.line)
        self.forward = None
        return None

    def unpaid(self) -> ObservationDivergence | None:
        """At the end of the trace: an abort or a close the engine never received (forwards and the
        consumer's end may still be on their way when a trace is cut, so they are not owed here)."""
        owed = [(debt, what) for debt, what in ((self.abort, "engine.abort"), (self.close, "engine.close"))
                if debt is not None]
        if not owed:
            return None
        debt, what = min(owed, key=lambda pair: pair[0].line)
        return ObservationDivergence(
            debt.line, what, self.state.control, f"{what} was owed by this line's step but never observed",
            f"{what} ({debt.what})", "nothing until the trace ended", debt.rule, debt.line,
        )

    def _diverges(
        self, line: int, obs: str, reason: str, expected: str, observed: str, rule: str | None,
        owed_at: int | None = None,
    ) -> ObservationDivergence:
        return ObservationDivergence(line, obs, self.state.control, reason, expected, observed, rule, owed_at)


def item_name(item: object, position: int, mode: Mode, validate: bool = True) -> str:
    """How an engine item is written in an observation trace: the event the protocol's own reading of
    items makes of it (:func:`item_event` reads it back), or ``malformed``."""
    try:
        classified = classify_item(item, position, mode, validate)
    except Exception:
        return MALFORMED_ITEM
    if not isinstance(classified, Event):
        return MALFORMED_ITEM
    name = _NAMES.get(classified)
    if name is None:
        # Events are canonical singletons, a handful per run: each one's name is worked out once.
        name = _NAMES[classified] = classified.name
    return name


_NAMES: dict[Event, str] = {}


def item_event(item: str | None) -> Event:
    """The event an observed engine item stands for (checked when the line was parsed)."""
    if item is None or item == MALFORMED_ITEM:
        return event(EventKind.ERROR)
    return parse_event(item)


def item_problem(obs: str, item: str | None, n: int | None) -> str | None:
    """What is wrong with the ``item`` and ``n`` fields of an observation, or None."""
    if obs == "engine.item":
        if item is None:
            return "field 'item' is required for engine.item"
        if item != MALFORMED_ITEM:
            try:
                ev = parse_event(item)
            except UnknownEvent:
                return f"field 'item': unknown engine item {item!r}"
            if ev.kind not in ENGINE_STREAM_KINDS or ev.kind is EventKind.END:
                return f"field 'item': {item!r} is not an engine item"
        if n is None:
            return "field 'n' is required for engine.item"
    elif obs == "client.item" and item not in ITEM_KINDS:
        return f"field 'item' of client.item must be one of {', '.join(ITEM_KINDS)}"
    return None
