"""The per-request handle shared by the runtime, the adapter and the engine.

Method names follow Dynamo's Python ``Context`` so an existing Dynamo engine
runs unchanged.  Signals reach the adapter through listeners called at once:
no task is needed per request to watch for cancellation.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Literal

Signal = Literal["stop", "kill", "first_token"]
Listener = Callable[[Signal], None]

_ids = itertools.count(1)


class Context:
    __slots__ = (
        "_first_token",
        "_id",
        "_killed",
        "_listeners",
        "_signals",
        "_stopped",
        "_waiters",
        "parent_span_id",
        "span_id",
        "trace_id",
    )

    def __init__(
        self,
        id: str | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> None:
        self._id = id if id is not None else f"request-{next(_ids)}"
        self._stopped = False
        self._killed = False
        self._first_token = False
        self._listeners: list[Listener] = []
        self._signals: list[Signal] = []
        self._waiters: list[asyncio.Future[bool]] = []
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id

    def id(self) -> str:
        return self._id

    def is_stopped(self) -> bool:
        """True after a stop or a kill (a killed request is also stopped)."""
        return self._stopped

    def is_killed(self) -> bool:
        return self._killed

    def stop_generating(self) -> None:
        """Ask the engine to stop this request gracefully."""
        if self._stopped:
            return
        self._stopped = True
        self._signal("stop")

    def kill(self) -> None:
        """Stop this request at once; a kill is also a stop."""
        if self._killed:
            return
        self._killed = True
        self._stopped = True
        # The model decides what a kill after a stop means (nothing more).
        self._signal("kill")

    async def async_killed_or_stopped(self) -> bool:
        """Wait until the request is stopped or killed; returns True."""
        if self._stopped:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def notify_first_token(self) -> None:
        """Engine side channel: the first token exists (idempotent)."""
        if self._first_token:
            return
        self._first_token = True
        self._signal("first_token")

    def first_token_notified(self) -> bool:
        return self._first_token

    def signals(self) -> tuple[Signal, ...]:
        """The signals given so far, in the order they happened (each at most once)."""
        return tuple(self._signals)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def has_listeners(self) -> bool:
        """Whether some request still watches this context (none should, once it is over)."""
        return bool(self._listeners)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _signal(self, signal: Signal) -> None:
        self._signals.append(signal)
        if signal != "first_token":
            for waiter in self._waiters:
                if not waiter.done():
                    _wake(waiter)
        for listener in tuple(self._listeners):
            listener(signal)

    def __repr__(self) -> str:
        flags = [name for name, on in (("stopped", self._stopped), ("killed", self._killed)) if on]
        return f"Context({self._id!r}{', ' if flags else ''}{', '.join(flags)})"


def _wake(waiter: asyncio.Future[bool]) -> None:
    """Resolve ``waiter`` on its loop, from any thread; a loop already closed has nobody left to wake."""
    loop = waiter.get_loop()
    try:
        loop.call_soon_threadsafe(_resolve, waiter)
    except RuntimeError:
        if not loop.is_closed():
            raise


def _resolve(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)
