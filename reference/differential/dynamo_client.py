"""One request through Dynamo's Python client: sent with its context, stopped or left at given item counts, read
until its stream ends.  Every wait is bounded.  Shared by ``differential`` and ``conform --runtime dynamo``.

A client of the runtime can stop a request (``context.stop_generating()``), before it is sent or once some
items have arrived, or leave it: let go of its stream, which the worker hears as a kill
(RUNTIME-DISCONNECT-KILLS).  The stream of a request not left is handed back: letting go of it later is a kill
too, which must not reach a request whose engine is still winding down.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from typing import Any, Literal

from dynamo_backend_protocol.reference.bounded import awaited_within

Act = Literal["stop", "leave"]
Ended = Literal["ended", "left", "not_sent", "timed_out", "failed"]
"""The stream ran off its end; the client left; ``round_robin`` raised or timed out (``error``); a read timed out;
a read raised (``error``)."""


@dataclasses.dataclass
class Exchange:
    """What the client of one request saw."""

    data: list[Any]
    """Each item's data, in order."""
    ended: Ended
    error: Exception | None = None
    stream: Any = dataclasses.field(default=None, repr=False)
    """The response stream, unless the client left it."""


async def exchange(client: Any, context: Any, request: dict[str, Any], acts: Sequence[tuple[int, Act]],
                   timeout: float) -> Exchange:
    """Send ``request`` with ``context`` and read it to its end; each ``(after_items, act)`` is done once that
    many items have arrived (-1, for a stop: before the request is sent).  Each wait is bounded by ``timeout``."""
    pending = sorted(acts, key=lambda act: act[0])
    if pending and pending[0][0] < 0:
        pending.pop(0)
        context.stop_generating()
    try:
        stream = await awaited_within(client.round_robin(request, context=context), timeout)
    except Exception as error:
        return Exchange([], "not_sent", error)
    data: list[Any] = []
    while True:
        if pending and pending[0][0] == len(data):
            _, act = pending.pop(0)
            if act == "leave":
                del stream
                gc.collect()  # the stream is gone now, not whenever the collector gets to it
                return Exchange(data, "left")
            context.stop_generating()
        try:
            annotated = await awaited_within(stream.__anext__(), timeout)
        except StopAsyncIteration:
            return Exchange(data, "ended", stream=stream)
        except TimeoutError as error:
            return Exchange(data, "timed_out", error, stream)
        except Exception as error:
            return Exchange(data, "failed", error, stream)
        data.append(annotated.data() if callable(getattr(annotated, "data", None)) else annotated.data)
