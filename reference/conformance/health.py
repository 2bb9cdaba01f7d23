"""Whether the shared engine still serves: one plain request, read to its terminal.

Asked after a check failed, so that an engine a check left unable to serve is
reported once, rather than failing every later check for that one reason.
"""

from __future__ import annotations

from dynamo_backend_protocol.reference.conformance.drive import PLAIN_MAX_TOKENS
from dynamo_backend_protocol.reference.conformance.session import KitSettings, bounded, describe_error
from dynamo_backend_protocol.reference.conformance.upstream import close_raw, open_raw_stream, read_raw
from dynamo_backend_protocol.reference.context import Context


async def engine_still_serves(settings: KitSettings) -> str | None:
    """None if a plain request still ends with a terminal chunk; else what happened instead."""
    engine = settings.session().engine
    request = settings.requests.request(PLAIN_MAX_TOKENS)
    try:
        stream = await bounded(open_raw_stream(engine, request, Context("conformance-still-serving")),
                               settings.stream_timeout, "generate")
    except Exception as error:
        return f"a plain request's generate raised {describe_error(error)}"
    try:
        run = await read_raw(stream, settings.stream_timeout, after_terminal=0)
    finally:
        await close_raw(stream)
    failed = run.first_error()
    if failed is not None:
        return f"a plain request failed: {failed}"
    if run.terminal_index() is None:
        how = f"was still going after {settings.stream_timeout:g} s" if run.timed_out else "ended"
        return f"a plain request {how} without a terminal chunk"
    return None
