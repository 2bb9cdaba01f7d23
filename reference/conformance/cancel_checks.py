"""Checks that a cancellation does what it should and no more: abort behaves, and a stop stays with its request.

The runtime calls ``engine.abort(context)`` right after it stops a request and
waits for it; an abort that raises or hangs costs the runtime a slot, so it is
judged on its own (AbortFailed).  A stop flag kept on the engine instead of
the request ends every request running beside the stopped one; eight
concurrent requests, one stopped, catch it (CancellationLeaked).
"""

from __future__ import annotations

import asyncio

from dynamo_backend_protocol.reference.conformance.adapter_checks import STOPPABLE, adapter_session
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import Action, RequestPlan
from dynamo_backend_protocol.reference.conformance.session import KitSettings, describe_error, shared_engine
from dynamo_backend_protocol.reference.conformance.upstream import (
    CONCURRENT_REQUESTS,
    close_raw,
    open_raw_stream,
    read_raw,
)
from dynamo_backend_protocol.reference.conformance.watchdog import within
from dynamo_backend_protocol.reference.context import Context

F = Failure
NEIGHBOUR_TOKENS = 64
"""What each unstopped neighbour asks for: long enough to still be running when its neighbour is stopped."""


async def probe_abort(settings: KitSettings) -> Verdicts:
    """Stop a live request and call abort for it, as the runtime does; it must return within the deadline."""
    async with shared_engine(settings) as session:
        context = Context("conformance-abort")
        stream = await open_raw_stream(session.engine, settings.requests.request(STOPPABLE), context)
        try:
            context.stop_generating()
            problem = None
            try:
                # within(), not asyncio.timeout: an abort that swallows its cancellation is abandoned.
                await within(session.target.abort(context), settings.cancel_deadline, "abort")
            except TimeoutError:
                problem = f"abort(context) did not return within {settings.cancel_deadline:g} s"
            except Exception as error:
                problem = f"abort(context) raised {describe_error(error)}"
            await read_raw(stream, settings.cancel_deadline, after_terminal=0)
        finally:
            await close_raw(stream)
    if problem is None:
        return {F.ABORT_FAILED: None}
    return {
        F.ABORT_FAILED: f"for a request stopped by context.stop_generating(), {problem}; abort must release the "
        "request's resources quickly and never raise (the runtime awaits it before freeing the request)"
    }


async def probe_isolation(settings: KitSettings) -> Verdicts:
    """Stop one of eight concurrent requests after its first chunk; the other seven must finish as asked."""
    async with adapter_session(settings) as session:
        plans = [RequestPlan(Action.STOP, 1, STOPPABLE)] + [
            RequestPlan(Action.FINISH, max_tokens=NEIGHBOUR_TOKENS) for _ in range(CONCURRENT_REQUESTS - 1)
        ]
        runs = await asyncio.gather(
            *(session.drive(plan, f"conformance-isolation-{number}") for number, plan in enumerate(plans, start=1))
        )
        await session.settle()
    for run in runs[1:]:
        # A leak is a neighbour aborted or ended as cancelled; one failing on its own (an error item, a busy
        # engine) is the concurrency check's business, not this one's.
        aborts = len(run.log.aborts) if run.log is not None else 0
        if run.log is not None and run.log.signals_of("stop", "kill"):
            continue  # Nobody stops a neighbour: the engine stopped it itself (AbortOnCleanCompletion's to name).
        if run.cancelled() or aborts:
            what = f"was aborted {aborts} time(s) and " if aborts else ""
            return {
                F.CANCELLATION_LEAKED: f"request {run.request_id!r} (read to the end) {what}{run.describe_end()} "
                f"after request 'conformance-isolation-1' was stopped; keep the stop with its own request "
                "(check its context.is_stopped(), not an engine-wide flag)"
            }
    return {F.CANCELLATION_LEAKED: None}
