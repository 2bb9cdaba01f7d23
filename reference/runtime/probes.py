"""The client's side of the kit's probes, sent by a real Dynamo client to a real Worker.

A Python client of Dynamo's runtime can send a request, stop it
(``context.stop_generating()``), or leave it: drop its stream, which the
worker hears as a kill (RUNTIME-DISCONNECT-KILLS).  It has no ``kill()``, so
the kit's kill probes are played as a client that leaves.  Each request is
named (the context id reaches the worker's context), so the engine-side
recording of it can be found.  A client keeps each stream until the caller
lets go of the run, so only a client that leaves is heard as a kill.  Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

from dynamo_backend_protocol.reference.differential.dynamo_client import exchange

Action = Literal["stop", "leave"]
ClientEnd = Literal["terminal", "no_terminal", "setup_error", "error", "left", "timed_out"]


@dataclasses.dataclass
class ClientRun:
    """What the client of one request saw."""

    name: str
    items: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    end: ClientEnd = "no_terminal"
    error: str | None = None
    held: Any = dataclasses.field(default=None, repr=False)
    """The client's stream, kept after it ended: letting go of it is a kill on the worker
    (RUNTIME-DISCONNECT-KILLS), which must not reach a request whose engine is still winding down
    (a stopped stream ends at once on the client's side, before the engine's cancelled terminal)."""

    def terminal(self) -> dict[str, Any] | None:
        return next((item for item in self.items if item.get("finish_reason") is not None), None)


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    request: dict[str, Any]
    action: Action | None = None
    after_items: int = 0
    """Act once this many items have arrived; -1 (a stop only) means before the request is sent."""


async def send(client: Any, core: Any, plan: Plan, timeout: float) -> ClientRun:
    """Play ``plan``: send its request, act when due, read until the stream ends (each read bounded)."""
    acts = [] if plan.action is None else [(plan.after_items, plan.action)]
    seen = await exchange(client, core.Context(id=plan.name), plan.request, acts, timeout)
    run = ClientRun(plan.name, [dict(data) if isinstance(data, dict) else {"data": data} for data in seen.data],
                    held=seen.stream)
    if seen.ended == "ended":
        run.end = "terminal" if run.terminal() is not None else "no_terminal"
    elif seen.ended == "left":
        run.end = "left"
    elif seen.ended == "not_sent" and isinstance(seen.error, TimeoutError):
        run.end, run.error = "timed_out", f"the request was not accepted within {timeout:g} s"
    elif seen.ended == "not_sent":
        run.end, run.error = "setup_error", f"{type(seen.error).__name__}: {seen.error}"
    elif seen.ended == "timed_out":
        run.end, run.error = "timed_out", f"no item within {timeout:g} s"
    else:
        run.end, run.error = "error", f"{type(seen.error).__name__}: {seen.error}"
    return run


async def send_all(client: Any, core: Any, plans: list[Plan], timeout: float) -> list[ClientRun]:
    """All of ``plans`` at once (interleaved on the worker)."""
    return list(await asyncio.gather(*(send(client, core, plan, timeout) for plan in plans)))
