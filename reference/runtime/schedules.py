"""The property-based phase under Dynamo's real runtime: drawn schedules of requests sent by a real client.

The schedules are the default run's (:func:`conformance.fuzz.schedules`): up
to four concurrent requests, each read to the end, or stopped or killed after
a drawn number of items; searched, bounded and shrunk the same way
(:func:`conformance.fuzz.search`).  What a client of the runtime can do narrows
them: a kill is a client that leaves (RUNTIME-DISCONNECT-KILLS), a drop
without a kill does not exist, and whether the client acts while it waits for
an item is not its to choose; so neither of the last two is drawn.

Each request is judged from both sides, by the rules the default run's
schedules are judged by:

* the engine's side by ``trace``'s engine-side inference: an item after the
  terminal, an abort the model does not owe (ABORT-ONCE, ABORT-NEEDS-CANCEL,
  DECODE-DEFER), any other step the model refuses;
* the kit's engine-side rules, read off the recording: generate succeeded,
  each item well formed, no error, a terminal at the end;
* a stopped or left request by the kit's classification of what became of it
  (:func:`.stops.after_stop`): it went on or finished as if not stopped
  (MidStreamCancellationIgnored's meaning), or was left silent after
  ``abort()`` (AbortedStreamNotEnded's);
* a request read to the end must reach its terminal on the client.

An abort owed but never made is the runtime's to make, not the engine's, so it
is not a finding here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop
from dynamo_backend_protocol.model.traces.check import RequestSummary
from dynamo_backend_protocol.model.traces.engine_side import EngineSideRun
from dynamo_backend_protocol.model.traces.observed import ObservationDivergence
from dynamo_backend_protocol.reference.conformance.checks import Failure
from dynamo_backend_protocol.reference.conformance.drive import Action, RequestPlan, RequestShape
from dynamo_backend_protocol.reference.conformance.fuzz import (
    Schedule,
    late_stop_examples,
    late_stops,
    schedules,
    search,
)
from dynamo_backend_protocol.reference.conformance.rules import Finding
from dynamo_backend_protocol.reference.runtime.engine_side import EngineRequest, by_request, describe_ending, refused
from dynamo_backend_protocol.reference.runtime.launcher import RuntimeWorker
from dynamo_backend_protocol.reference.runtime.probes import Action as ClientAction
from dynamo_backend_protocol.reference.runtime.probes import ClientRun, Plan, send_all
from dynamo_backend_protocol.reference.runtime.stops import after_stop

DRAWN = (Action.FINISH, Action.STOP, Action.KILL)
"""What a client of the runtime can do to a request (see the module's note)."""
PLAYED_AS: dict[Action, ClientAction | None] = {Action.FINISH: None, Action.STOP: "stop", Action.KILL: "leave"}
SETTLE_GRACE = 2.0
"""Seconds, past the cancel deadline, the engine's side of a schedule may take to end after the client's."""


@dataclasses.dataclass
class RuntimeSearch:
    """One run's search: the worker its schedules go to, the client that sends them, and its bounds."""

    worker: RuntimeWorker
    client: Any
    core: Any
    shape: RequestShape
    examples: int
    stream_timeout: float
    cancel_deadline: float
    fuzz_budget: float
    played: int = 0
    """Schedules sent so far: each request's name (and so its engine-side lines) is the run's only."""

    def examples_done(self, done: int, total: int) -> None:
        """A run under the real runtime shows no progress while it goes."""


async def schedule_verdict(run: RuntimeSearch) -> str | None:
    """ScheduleFailed's verdict: None, or the plainest schedule that broke a rule, and how."""
    found = await search(run, schedules(DRAWN, while_waiting=False), play_schedule, run.examples, Schedule.size)
    if found is None:
        return None
    schedule, findings = found
    first = findings[0]
    return f"schedule [{schedule.describe()}] broke {first.rule}: {first.reason}"


async def late_stop_verdict(run: RuntimeSearch) -> str | None:
    """MidStreamCancellationIgnored's property-based part, as in the default run: one long request stopped or
    left at a drawn later point (between items: a client cannot choose to act mid-await).  None: none ignored."""
    found = await search(run, late_stops(while_waiting=False), play_late_stop, late_stop_examples(run.examples),
                         lambda plan: (plan.after_chunks, plan.action is Action.KILL))
    if found is None:
        return None
    plan, findings = found
    return (f"{plan.describe()}: {findings[0].reason}; check context.is_stopped() before every token, or make "
            "abort() end the request, and end with a 'cancelled' terminal")


async def play_late_stop(run: RuntimeSearch, plan: RequestPlan) -> list[Finding]:
    """One late stop; a finding if it was ignored (a stream left waiting is AbortedStreamNotEnded's, other
    endings the schedules')."""
    return [finding for finding in await _played(run, (plan,), "conform-late-stop")
            if finding.rule is Failure.MID_STREAM_CANCELLATION_IGNORED]


async def play_schedule(run: RuntimeSearch, schedule: Schedule) -> list[Finding]:
    return await _played(run, schedule.plans, "conform-schedule")


async def _played(run: RuntimeSearch, plans: Sequence[RequestPlan], prefix: str) -> list[Finding]:
    """Send ``plans``' requests at once, wait (bounded) until the engine's side of each shows its answer, and
    judge them."""
    run.played += 1
    sent = [Plan(f"{prefix}-{run.played}-{number}", run.shape.request(plan.max_tokens), PLAYED_AS[plan.action],
                 plan.after_chunks)
            for number, plan in enumerate(plans, start=1)]
    clients = await send_all(run.client, run.core, sent, run.stream_timeout)
    names = [plan.name for plan in sent]
    await run.worker.settled(names, run.cancel_deadline + SETTLE_GRACE, EngineRequest.finished_showing)
    lines = [text for text in run.worker.request_lines() if _request_of(text) in names]
    engine = by_request(lines)
    findings = engine_side_findings(lines)
    for plan, client in zip(plans, clients, strict=True):
        findings += request_findings(plan, client, engine.get(client.name) or EngineRequest(client.name),
                                     run.shape.mode)
    return findings


def engine_side_findings(lines: list[str]) -> list[Finding]:
    """What ``trace``'s engine-side inference refuses in ``lines``, but an abort owed and never made (the
    runtime's debt; an engine-side trace diverges only by observations)."""
    return [Finding(divergence.rule or "STREAM-EVENT-ORDER",
                    f"{summary.request}: {divergence.reason}; observed {divergence.observed}")
            for summary, divergence in refused(lines)
            if isinstance(divergence, ObservationDivergence) and divergence != _unpaid(summary)]


def request_findings(plan: RequestPlan, client: ClientRun, engine: EngineRequest, mode: Mode) -> list[Finding]:
    """The kit's engine-side rules (:data:`conformance.rules.ENGINE_RULES`) on one request of a schedule, read
    off its two sides: generate succeeded, every item well formed, no error, a terminal at the end, and a
    stopped or left stream that ended as a stop must end it."""
    who = client.name
    failed = engine.first("engine.setup_failed")
    if failed is not None:
        return [Finding(Failure.GENERATE_FAILED, f"{who}: generate raised {failed.get('error')}")]
    found: list[Finding] = []
    malformed = engine.malformed()
    if malformed is not None:
        found.append(Finding(Failure.MALFORMED_CHUNK, malformed))
    raised = engine.first("engine.raise")
    if raised is not None:
        found.append(Finding(Failure.STREAM_YIELDED_ERROR, f"{who}: the stream raised {raised.get('error')}"))
    ending = engine.ending()
    if ending is not None and ending["obs"] == "engine.end":
        found.append(Finding(Failure.NO_TERMINAL_CHUNK, f"{who}: the stream {describe_ending(ending)}; end every "
                                                        "stream with a chunk that has a finish_reason ('cancelled' "
                                                        "after a stop or kill)"))
    if plan.action is Action.FINISH:
        if client.end != "terminal" and not found:
            found.append(Finding(Failure.NO_TERMINAL_CHUNK, f"{who}, read to the end, got no terminal "
                                                            f"({client.error or client.end}); the engine's stream "
                                                            f"{describe_ending(ending)}"))
        return found
    outcome = after_stop(engine, client, mode, plan.max_tokens)
    if outcome is not None and (outcome.ignored or outcome is AfterStop.STRANDED):
        signal = "the stop" if plan.action is Action.STOP else "the kill (its client left)"
        failure = Failure.ABORTED_STREAM_NOT_ENDED if outcome is AfterStop.STRANDED else (
            Failure.MID_STREAM_CANCELLATION_IGNORED)
        found.append(Finding(failure, f"{who}: after {signal} the engine answered {engine.answers_after_cancel()} "
                                      f"more read(s) and its stream {describe_ending(ending)} (it {outcome.value})"))
    return found


def _unpaid(summary: RequestSummary) -> ObservationDivergence | None:
    return summary.run.unpaid() if isinstance(summary.run, EngineSideRun) else None


def _request_of(text: str) -> object:
    try:
        line = json.loads(text)
    except ValueError:
        return None
    return line.get("request") if isinstance(line, dict) else None
