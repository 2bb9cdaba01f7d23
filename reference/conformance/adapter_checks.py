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

from dynamo_backend_protocol.model.lifecycle import CALL_EVENTS, LifecycleEvent
from dynamo_backend_protocol.model.rules import summary
from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import (
    CANCEL_MAX_TOKENS,
    Action,
    DriveLimits,
    Ending,
    RequestPlan,
    RequestRun,
    TraceCollector,
    drive,
)
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.rules import (
    Judge,
    abort_at_most_once,
    chunks_well_formed,
    dropped_stream_closed,
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


@dataclass
class AdapterSession:
    session: EngineSession
    adapter: EngineAdapter
    collector: TraceCollector
    settings: KitSettings

    @property
    def recorder(self) -> RecordingEngine:
        return self.session.recording()

    async def drive(self, plan: RequestPlan, request_id: str) -> RequestRun:
        limits = DriveLimits(self.settings.stream_timeout, self.settings.cancel_deadline)
        return await drive(self.adapter, self.recorder, self.collector, plan, request_id, limits,
                           self.settings.requests)

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
    async with adapter_session(settings) as session:
        run = await drive_cancelled(session, Action.STOP, "conformance-stop-and-abort", while_waiting=True)
        await session.settle()
    if run.cancelled():
        return {F.ABORTED_STREAM_NOT_ENDED: None}
    aborts = len(run.log.aborts) if run.log is not None else 0
    timed_out = run.ending is Ending.TIMED_OUT
    how = f"did not end within {settings.cancel_deadline:g} s" if timed_out else run.describe_end()
    return {
        F.ABORTED_STREAM_NOT_ENDED: f"after context.stop_generating() the runtime called engine.abort "
        f"({aborts} call(s)) and the stream {how}; abort must not strand the stream: it should still end "
        "with a 'cancelled' terminal (wake whatever the stream waits on)"
    }


async def probe_kill(settings: KitSettings) -> Verdicts:
    async with adapter_session(settings) as session:
        run = await session.drive(RequestPlan(Action.KILL, 0, STOPPABLE), "conformance-kill")
        await session.settle()
    if run.ending is Ending.TIMED_OUT:
        problem = (
            f"after context.kill() the stream did not end within {settings.cancel_deadline:g} s; a kill is also a "
            "stop (context.is_stopped() is true): end the stream with a 'cancelled' terminal"
        )
    elif run.cancelled():
        return {F.KILL_NOT_HANDLED_LIKE_STOP: None}
    else:
        problem = (
            f"after context.kill() the stream {run.describe_end()}, whereas after a stop it ends with 'cancelled': "
            "handle a kill like a stop"
        )
    return {F.KILL_NOT_HANDLED_LIKE_STOP: problem}


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
