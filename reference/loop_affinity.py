"""A response stream belongs to the event loop that set it up (spec FAULT-STREAM-LOOP).

The adapter starts a request's abort and the close of the engine's stream as
tasks on the loop that awaited ``generate()``.  Read under another loop, those
tasks would sit on a loop that no longer runs: the model records
``call_abort`` and ``engine.abort`` is never called.  :func:`require_home_loop`
refuses such a read before anything happens, so the stream stays as it was.
"""

from __future__ import annotations

import asyncio

from dynamo_backend_protocol.model.exceptions import RuleRefusal

STREAM_LOOP = "FAULT-STREAM-LOOP"


class ForeignEventLoop(RuleRefusal, RuntimeError):
    """A response stream was read while another event loop ran than the one that set it up.

    A ``RuntimeError`` too, as spec FAULT-STREAM-LOOP promises and callers catch it.
    """

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} was set up on another event loop than the one reading it; read it on the loop that "
            "awaited generate() (its abort and its stream close run there)",
            STREAM_LOOP,
        )


def require_home_loop(home: asyncio.AbstractEventLoop, what: str = "this response stream") -> None:
    """Raise :class:`ForeignEventLoop` unless ``home`` is the running loop (or no loop runs: then the
    caller's own ``await`` fails as asyncio makes it)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is not home:
        raise ForeignEventLoop(what)
