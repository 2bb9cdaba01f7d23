"""Checks upstream lacks, run through the reference adapter in the chosen mode.

The engine sits behind a :class:`RecordingEngine`, so each check can see
what reached the engine (aborts, lifecycle calls, the raw items) as well as
what the client received.  Each check drives a scenario made for its rule
and applies that rule's judge from :mod:`.conformance_rules`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.lifecycle import CALL_EVENTS, LifecycleEvent
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.model.stopped import AfterStop, Ending
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import (
    CANCEL_MAX_TOKENS,
    Action,
    DriveLimits,
    RequestPlan,
    RequestRun,
    TraceCollector,
    drive,
)
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.rules import (
    Judge,
    abort_at_most_once,
    abort_before_first_read_lost,
    after_stop,
    chunks_well_formed,
    describe_after_stop,
    dropped_stream_closed,
    kill_handled_worse,
    no_abort_before_first_token,
    no_abort_without_cancel,
)
from dynamo_backend_protocol.reference.conformance.session import (
    EngineSession,
    KitSettings,
    describe_tasks,
    shared_engine,
    tasks_left_behind,
)
from dynamo_backend_protocol.reference.conformance.watchdog import within

F = Failure
STOPPABLE = CANCEL_MAX_TOKENS
SETTLE_GRACE = 1.0
"""Seconds past the cancel deadline the kit waits for the adapter's aborts and closes to finish."""


class RequestNotSetUp(ProtocolError):
    """A check's request failed at setup (generate raised): the check cannot judge its rule."""


@dataclass
class AdapterSession:
    session: EngineSession
    adapter: EngineAdapter
    collector: TraceCollector
    settings: KitSettings

    @property
    def recorder(self) -> RecordingEngine:
        return self.session.recording()

    async def drive(self, plan: RequestPlan, request_id: str, *, must_start: bool = True) -> RequestRun:
        """Carry ``plan`` out on a fresh request.  A request the engine refused at setup tells a check nothing
        about its rule, so unless ``must_start`` is off that raises :class:`RequestNotSetUp`."""
        limits = DriveLimits(self.settings.stream_timeout, self.settings.cancel_deadline)
        run = await drive(self.adapter, self.recorder, self.collector, plan, request_id, limits,
                          self.settings.requests)
        if must_start and run.ending is Ending.SETUP_FAILED:
            raise RequestNotSetUp(f"request {request_id!r} ({plan.describe()}): generate raised {run.setup_error}, "
                                  "so this check could not be judged")
        return run

    async def warm_up(self) -> None:
        """One short request first, so tasks an engine starts lazily on its first request (an output
        handler, a scheduler) already exist when the kit starts looking for tasks left behind."""
        await self.drive(RequestPlan(Action.FINISH, max_tokens=1), "conformance-warm-up")
        await self.settle()

    async def settle(self) -> None:
        """Wait for the aborts and stream closes the adapter started (bounded: an abort may hang, which
        AbortFailed judges; the adapter cancels an abort that overruns)."""
        with contextlib.suppress(TimeoutError):
            await within(self.adapter.settle(), self.settings.cancel_deadline + SETTLE_GRACE, "settling")


@contextlib.asynccontextmanager
async def adapter_session(settings: KitSettings) -> AsyncIterator[AdapterSession]:
    """The shared engine behind its recorder, and a fresh adapter in the kit's mode in front of it."""
    async with shared_engine(settings) as session:
        collector = TraceCollector(settings.trace_sink)
        yield AdapterSession(session, settings.adapter(session.recording(), collector), collector, settings)


async def drive_cancelled(
    session: AdapterSession, action: Action, request_id: str, *, while_waiting: bool = False
) -> RequestRun:
    """Stop or kill a request after its first chunk.  A stream already over by then (a prefill clamped
    to one token, an encode hand-off) tells nothing, so a fresh request is cancelled before its first
    read instead, when the engine has not run yet and must end with a cancelled terminal."""
    run = await session.drive(RequestPlan(action, 1, STOPPABLE, while_waiting=while_waiting), request_id)
    if run.ended_before_cancel():
        await session.settle()
        run = await session.drive(RequestPlan(action, 0, STOPPABLE), f"{request_id}-before-reading")
    return run


async def _judged(
    settings: KitSettings, failure: Failure, judge: Judge, plans: list[tuple[RequestPlan, str]]
) -> Verdicts:
    async with adapter_session(settings) as session:
        runs = [await session.drive(plan, request_id) for plan, request_id in plans]
        await session.settle()
    for request in runs:
        finding = judge(request, settings.mode)
        if finding is not None:
            return {failure: finding.reason}
    return {failure: None}


async def probe_well_formed(settings: KitSettings) -> Verdicts:
    plan = RequestPlan(Action.FINISH)
    return await _judged(settings, F.MALFORMED_CHUNK, chunks_well_formed, [(plan, "conformance-well-formed")])


async def probe_aborted_stream(settings: KitSettings) -> Verdicts:
    """Stop a request while the client waits for its second chunk; the adapter calls abort() at once.  Judged
    here only: whether the stream was left waiting for ever after abort() (an engine that kept streaming, or
    finished as if not stopped, is MidStreamCancellationIgnored's to report, which names that bug)."""
    async with adapter_session(settings) as session:
        run = await drive_cancelled(session, Action.STOP, "conformance-stop-and-abort", while_waiting=True)
        await session.settle()
    if after_stop(run, settings.mode) is not AfterStop.STRANDED:
        return {F.ABORTED_STREAM_NOT_ENDED: None}
    return {
        F.ABORTED_STREAM_NOT_ENDED: f"{describe_after_stop(run, settings.cancel_deadline)}: after abort() the "
        "stream was left waiting for ever (Dynamo's runtime reads on with no timeout); wake whatever the stream "
        "waits on and end it with a 'cancelled' terminal"
    }


async def probe_stop_after_first_chunk(settings: KitSettings) -> Verdicts:
    """The deterministic part of MidStreamCancellationIgnored: a stop after the first chunk, while the client
    waits for the next, must end the stream 'cancelled' (unless the stream's own finish was already due)."""
    async with adapter_session(settings) as session:
        run = await drive_cancelled(session, Action.STOP, "conformance-stop-after-first-chunk", while_waiting=True)
        await session.settle()
    return {F.MID_STREAM_CANCELLATION_IGNORED: stop_ignored(run, settings)}


def stop_ignored(run: RequestRun, settings: KitSettings) -> str | None:
    """Why a stopped stream counts as having ignored its stop (kept streaming, or finished as if not
    stopped), or None; a stream left waiting is AbortedStreamNotEnded's, other endings the schedules'."""
    outcome = after_stop(run, settings.mode)
    if not run.cancelled_by_client or run.ended_before_cancel() or not outcome.ignored:
        return None
    return (
        f"{describe_after_stop(run, settings.cancel_deadline)}: the stop was ignored (it {outcome.value}); "
        "check context.is_stopped() before every token, or make abort() end the request, and end with a "
        "'cancelled' terminal"
    )



async def probe_abort_before_first_read(settings: KitSettings) -> Verdicts:
    """Stop a request right after generate() returned and let the adapter's abort() run before the first read,
    as Dynamo's monitor does when a stop lands at setup.  If that stop is not honoured, a stop at the same point
    read at once is tried: only an abort lost in that window is this check's bug (an engine that honours no
    stop at all is named by the other checks)."""
    async with adapter_session(settings) as session:
        plan = RequestPlan(Action.STOP, 0, STOPPABLE, read_after_abort=True)
        run = await session.drive(plan, "conformance-abort-before-first-read")
        await session.settle()
        outcome = after_stop(run, settings.mode)
        if outcome.honoured or outcome is AfterStop.OTHER:
            return {F.ABORT_BEFORE_FIRST_READ_LOST: None}
        read_at_once = await session.drive(RequestPlan(Action.STOP, 0, STOPPABLE), "conformance-stop-read-at-once")
        await session.settle()
    if not abort_before_first_read_lost(outcome, after_stop(read_at_once, settings.mode)):
        return {F.ABORT_BEFORE_FIRST_READ_LOST: None}
    lost = "the stream was left waiting for ever" if outcome is AfterStop.STRANDED else (
        "the abort was lost and the request ran on")
    return {
        F.ABORT_BEFORE_FIRST_READ_LOST: f"{describe_after_stop(run, settings.cancel_deadline)}: {lost} (it "
        f"{outcome.value}), whereas the same stop read at once ended it; an abort() may come before the generator "
        "body runs: remember it (note the request in generate() itself, or check context.is_stopped() before "
        "submitting the request)"
    }


async def probe_kill(settings: KitSettings) -> Verdicts:
    """Kill a request before its first read; if that does not end it 'cancelled', stop one the same way:
    only a kill handled worse than a stop is this check's bug (a stop ignored too is another check's)."""
    async with adapter_session(settings) as session:
        killed = await session.drive(RequestPlan(Action.KILL, 0, STOPPABLE), "conformance-kill")
        await session.settle()
        if after_stop(killed, settings.mode).honoured:
            return {F.KILL_NOT_HANDLED_LIKE_STOP: None}
        stopped = await session.drive(RequestPlan(Action.STOP, 0, STOPPABLE), "conformance-stop-like-kill")
        await session.settle()
    if not kill_handled_worse(after_stop(killed, settings.mode), after_stop(stopped, settings.mode)):
        return {F.KILL_NOT_HANDLED_LIKE_STOP: None}
    return {
        F.KILL_NOT_HANDLED_LIKE_STOP: f"{describe_after_stop(killed, settings.cancel_deadline)}, whereas after a "
        "stop at the same point it ended 'cancelled'; a kill is also a stop (context.is_stopped() is true): "
        "handle it like one"
    }


async def probe_abort_once(settings: KitSettings) -> Verdicts:
    async with adapter_session(settings) as session:
        run = await drive_cancelled(session, Action.STOP, "conformance-abort-once")
        await session.settle()
    finding = abort_at_most_once(run, settings.mode)
    return {F.ABORT_CALLED_TWICE: None if finding is None else finding.reason}


async def probe_clean_completion(settings: KitSettings) -> Verdicts:
    plans = [
        (RequestPlan(Action.FINISH), "conformance-clean-finish"),
        # A silent drop is no cancellation either: it must not abort.
        (RequestPlan(Action.DROP, 1, STOPPABLE), "conformance-silent-drop"),
    ]
    return await _judged(settings, F.ABORT_ON_CLEAN_COMPLETION, no_abort_without_cancel, plans)


async def probe_decode_abort(settings: KitSettings) -> Verdicts:
    plan = RequestPlan(Action.STOP, 0, STOPPABLE)
    return await _judged(settings, F.ABORT_BEFORE_FIRST_TOKEN, no_abort_before_first_token,
                         [(plan, "conformance-decode-early-stop")])


async def probe_drop(settings: KitSettings) -> Verdicts:
    plans = [
        (RequestPlan(Action.DROP, 1, STOPPABLE), "conformance-drop-after-one"),
        (RequestPlan(Action.DROP, 0, STOPPABLE), "conformance-drop-before-reading"),
    ]
    async with adapter_session(settings) as session:
        await session.warm_up()
        for plan, request_id in plans:
            baseline = set(asyncio.all_tasks())
            run = await session.drive(plan, request_id)
            await session.settle()
            finding = dropped_stream_closed(run, settings.mode)
            if finding is not None:
                return {F.DROPPED_STREAM_NOT_CLOSED: finding.reason}
            leftover = await tasks_left_behind(baseline)
            if leftover:
                return {
                    F.DROPPED_STREAM_NOT_CLOSED: f"request {request_id!r} ({plan.describe()}): after the client "
                    f"dropped the stream, {len(leftover)} task(s) started for it kept running "
                    f"({describe_tasks(leftover)}); cancel per-request tasks in the generator's finally"
                }
    return {F.DROPPED_STREAM_NOT_CLOSED: None}


def judge_lifecycle(recorder: RecordingEngine) -> Verdicts:
    """The lifecycle machine's verdict on the order every call of the run reached the shared engine."""
    # Judged on the runtime's calls; the engine's calls on itself only move the machine (cleanup inside
    # abort makes the next generate arrive in CleanedUp), since what it does inside its own methods is its own.
    out_of_order = [
        breach for breach in recorder.breaches if breach.call.event in CALL_EVENTS and breach.call.caller == "runtime"
    ]
    if not out_of_order:
        return {F.LIFECYCLE_ORDER_VIOLATED: None}
    first = out_of_order[0]
    return {
        F.LIFECYCLE_ORDER_VIOLATED: f"{first.call.describe()} reached the engine in "
        f"phase {first.phase}, breaking {first.rule} ({summary(first.rule)}); "
        f"the calls leading to it: {_calls_summary(recorder, first.call.seq)}"
    }


def _calls_summary(recorder: RecordingEngine, breach_seq: int, last: int = 6) -> str:
    """The last few calls up to the breach (a whole run makes hundreds); successful returns left out."""
    quiet = (LifecycleEvent.START_OK, LifecycleEvent.CLEANUP_OK)
    calls = [call for call in recorder.calls if call.seq <= breach_seq and call.event not in quiet]
    said = ", ".join(call.describe() for call in calls[-last:])
    return said if len(calls) <= last else f"..., {said}"
