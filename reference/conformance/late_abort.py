"""An abort that arrives after the request is over: the engine must take it quietly.

Dynamo's runtime can call ``engine.abort(context)`` after a request's stream
has already ended with its terminal, an error one included (the upstream
finding abort-after-error-item, spec section 15: the client's stream ending
after the error reaches the worker as a disconnect).  An engine that looks
the request up and raises (``KeyError`` on a dict it already removed the
request from) turns a finished request into an error in the runtime's
cancellation path.  So the kit finishes one plain request, then calls abort
for it as the runtime may (AbortAfterTerminalRaised).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import PLAIN_MAX_TOKENS
from dynamo_backend_protocol.reference.conformance.session import KitSettings, describe_error, shared_engine
from dynamo_backend_protocol.reference.conformance.upstream import close_raw, open_raw_stream, read_raw
from dynamo_backend_protocol.reference.context import Context

F = Failure


def _how_it_ended(items: list[object], raised: BaseException | None) -> str:
    if raised is not None:
        return f"its error {describe_error(raised)}"
    last = items[-1] if items else None
    reason = last.get("finish_reason") if isinstance(last, Mapping) else None
    if isinstance(reason, str) and reason.startswith("error"):
        return f"its error terminal ({reason!r})"
    return f"its terminal ({reason!r})" if reason is not None else "the end of its stream"


async def probe_abort_after_terminal(settings: KitSettings) -> Verdicts:
    """Finish a plain request, then abort it: abort must return within the cancel deadline, raising nothing."""
    async with shared_engine(settings) as session:
        context = Context("conformance-late-abort")
        stream = await open_raw_stream(session.engine, settings.requests.request(PLAIN_MAX_TOKENS), context)
        try:
            run = await read_raw(stream, settings.stream_timeout, after_terminal=0)
        finally:
            await close_raw(stream)
        ended = _how_it_ended(run.items, run.raised)
        problem = None
        try:
            async with asyncio.timeout(settings.cancel_deadline):
                await session.target.abort(context)
        except TimeoutError:
            problem = f"did not return within {settings.cancel_deadline:g} s"
        except Exception as error:
            problem = f"raised {describe_error(error)}"
    if problem is None:
        return {F.ABORT_AFTER_TERMINAL_RAISED: None}
    return {
        F.ABORT_AFTER_TERMINAL_RAISED: f"abort(context) for a request that had already ended with {ended} {problem}; "
        "the runtime can abort a request after its terminal (an error item in particular), so abort must "
        "treat a request it no longer knows as done and return quietly"
    }
