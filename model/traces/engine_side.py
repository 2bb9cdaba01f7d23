"""Checking a trace recorded at the engine's boundary only (a deployment's recorder).

Such a request starts with ``engine.generate`` (with its ``mode``) instead of
``client.generate``; it has the engine's and the context's observations of
:mod:`model.traces.observed`, none of the client's.  The model's run is
inferred the same way, from the same inputs, and everything the engine's
side shows is judged:

- an abort reaches the engine only when owed (ABORT-NEEDS-CANCEL), at most
  once (ABORT-ONCE), in decode never before first-token (DECODE-DEFER), and
  every abort owed does reach it (ABORT-IMMEDIATE and the rest: an owed abort
  missing when the trace ends is the finding);
- nothing follows the engine's terminal (STREAM-TERMINAL-LAST): a later item,
  error or end of a terminal-less stream is not allowed in Done.  The runtime
  may resume a generator after its terminal to let it finish, so the
  generator's own end there (``engine.end``) is not an item.

What only the client's side shows is said per request, never guessed: whether
each item the adapter owed reached the client in order, whether the caller got
a setup error, whether the runtime closed the engine's stream; an abort that
follows a stop first seen after the engine's terminal (the runtime may or may
not have finished the response stream first); and, when side-channel notices
were not recorded, a decode abort with no token chunk before it.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.traces.observed import (
    ObservationDivergence,
    ObservationRecord,
    Owed,
    item_event,
    step_or_divergence,
)
from dynamo_backend_protocol.model.vocabulary import ActionKind, ControlState, Event, EventKind, event

ENGINE_START = "engine.generate"
ABORT_RAISED = "engine.abort_raised"
"""Informational: the engine's abort raised (the runtime swallows it); no event of the model."""
READ = "engine.read"
"""Informational: the runtime asked the stream for its next item (recorded once the request is cancelled)."""
INFORMATIONAL = frozenset({ABORT_RAISED, READ})
ENGINE_SIDE_ONLY: frozenset[str] = frozenset({ENGINE_START, *INFORMATIONAL})

_INPUTS: dict[str, Event] = {
    "engine.setup": event(EventKind.SETUP),
    "engine.setup_failed": event(EventKind.SETUP_FAILED),
    "engine.raise": event(EventKind.ERROR),
    "engine.end": event(EventKind.END),
    "context.stop": event(EventKind.STOP),
    "context.kill": event(EventKind.KILL),
    "context.first_token": event(EventKind.FIRST_TOKEN_NOTICE),
}
_STREAM_GONE = frozenset({"engine.close", "engine.cancel", "engine.interrupt"})
"""The runtime stopped reading the stream (closed it, cancelled the read): after a terminal that is
what the model owes; before one, the response stream went away, a drop."""
_DROP = event(EventKind.DROP)


@dataclass(slots=True)
class EngineSideRun:
    """The inferred run of one request seen from the engine's side, and what is still owed to the engine."""

    state: RequestState
    notices: bool = False
    """Whether side-channel first-token notices were recorded."""
    abort: Owed | None = None
    aborts: int = 0
    forwards: int = 0
    """Items (or a setup error) the adapter owed the client: judged only on the client's side."""
    read_ended: bool = False
    """The engine's stream was seen ending or being closed."""
    cancel_after_end: bool = False
    """The first stop or kill was seen only after the request was Done."""
    not_judged: list[str] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        """No abort owed: once Done, the verdict cannot change (a late abort is still checked)."""
        return self.abort is None

    def observe(self, table: CompiledTable, line: int, record: ObservationRecord) -> ObservationDivergence | None:
        obs = record.obs
        if obs == ENGINE_START:
            return self._diverges(line, obs, "the request was started twice", "nothing", obs, "STREAM-EVENT-ORDER")
        if obs in INFORMATIONAL:
            return None
        if obs == "engine.abort":
            return self._abort(line)
        if obs.startswith("client."):
            return self._diverges(line, obs, "a client observation in a request recorded at the engine's side only",
                                  "engine and context observations", obs, None)
        done = self.state.control is ControlState.DONE
        if obs in _STREAM_GONE or (obs == "engine.end" and done):
            self.read_ended = True
            if done:
                return None  # the stream's end after its terminal: what the model owes (STOP_READING)
            ev = _DROP
        elif obs == "engine.item":
            ev = item_event(record.item)
        else:
            ev = _INPUTS[obs]
        if ev.kind in (EventKind.STOP, EventKind.KILL) and done and self.state.cancel is None:
            self.cancel_after_end = True
        step = step_or_divergence(table, self.state, ev, line, obs)
        if isinstance(step, ObservationDivergence):
            return step
        for action in step.actions:
            if action is ActionKind.CALL_ABORT:
                self.abort = Owed.by(line, step)
            elif action in (ActionKind.FORWARD_DATA, ActionKind.FORWARD_ERROR, ActionKind.RETURN_SETUP_ERROR):
                self.forwards += 1
        if ev.kind in (EventKind.END, EventKind.ERROR, EventKind.SETUP_FAILED):
            self.read_ended = True
        self.state = step.after
        return None

    def _abort(self, line: int) -> ObservationDivergence | None:
        if self.abort is not None:
            self.abort, self.aborts = None, self.aborts + 1
            return None
        state = self.state
        if self.aborts:
            rule = "ABORT-ONCE"
        elif self.cancel_after_end:
            self.aborts += 1
            self._unjudged("an abort after a stop first seen after the engine's terminal (owed only if the runtime "
                           "saw the stop before its response stream finished)")
            return None
        elif state.cancel is None:
            rule = "ABORT-NEEDS-CANCEL"
        elif state.control is ControlState.CANCEL_PENDING and not state.first_token and not self.notices:
            self.aborts += 1
            self._unjudged("a decode abort with no token chunk before it (a side-channel first-token notice "
                           "was not recorded)")
            return None
        else:
            rule = "DECODE-DEFER"
        return self._diverges(line, "engine.abort", "engine.abort was called but the model owes no abort",
                              "no call of engine.abort", "engine.abort", rule)

    def _unjudged(self, what: str) -> None:
        if what not in self.not_judged:
            self.not_judged.append(what)

    def unpaid(self) -> ObservationDivergence | None:
        """At the end of the trace: an abort owed that never reached the engine."""
        debt = self.abort
        if debt is None:
            return None
        return ObservationDivergence(
            debt.line, "engine.abort", self.state.control, "engine.abort was owed by this line's step but never "
            "observed", f"engine.abort ({debt.what})", "nothing until the trace ended", debt.rule, debt.line,
        )

    def unobserved(self) -> list[str]:
        """What this request's verdict could not cover, because the client's side was not observed."""
        said = []
        if self.forwards:
            said.append(f"whether the {self.forwards} item(s) the adapter owed the client reached it, in order")
        if self.state.control is ControlState.DONE and not self.read_ended:
            said.append("whether the runtime stopped reading the engine's stream after its terminal")
        return [*said, *self.not_judged]

    def _diverges(
        self, line: int, obs: str, reason: str, expected: str, observed: str, rule: str | None,
    ) -> ObservationDivergence:
        return ObservationDivergence(line, obs, self.state.control, reason, expected, observed, rule)
