"""The per-request handle shared by the runtime, the adapter and the engine.

Every public member of Dynamo's ``dynamo._core.Context`` (1.6.1) is here with
the same name, call shape and meaning, so an existing Dynamo engine runs
unchanged; ``kill()`` is an addition for the kit and tests (Dynamo's Python
Context has none; its runtime kills from Rust).  Tracing is not wired to
anything: spans are no-op handles, as Dynamo's are when no tracer is plumbed
in.  Signals reach the adapter through listeners called at once: no task is
needed per request to watch for cancellation.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

from dynamo_backend_protocol.reference.loop_affinity import require_home_loop

Signal = Literal["stop", "kill", "first_token"]
Listener = Callable[[Signal], None]

_ids = itertools.count(1)


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"context metadata {what} must be a str, got {type(value).__name__}")
    return value


class ContextMetadata:
    """A live view of a context's propagated metadata, string keys to string values, with the
    methods of Dynamo's ``ContextMetadata`` (``keys``, ``values`` and ``items`` give lists)."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries

    def __getitem__(self, key: str) -> str:
        return self._entries[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._entries[_string(key, "key")] = _string(value, f"value for {key!r}")

    def __delitem__(self, key: str) -> None:
        del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._entries.get(key, default)

    def pop(self, key: str, default: str | None = None) -> str | None:
        """Remove ``key`` and return its value; a missing key gives ``default``, or KeyError
        when there is none (as in Dynamo, where a default of None counts as none)."""
        if default is None:
            return self._entries.pop(key)
        return self._entries.pop(key, default)

    def keys(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[str]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, str]]:
        return list(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()

    def copy(self) -> dict[str, str]:
        return dict(self._entries)

    def __repr__(self) -> str:
        return repr(self._entries)


class Span:
    """A no-op span handle, shaped like Dynamo's ``SpanProxy`` (the OpenTelemetry span API)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attrs: dict[str, Any] | None = None) -> None:
        pass

    def set_status(self, status: str, description: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> Literal[False]:
        return False


_GENERATE_SPAN = Span("engine.generate")


def _metadata_entries(metadata: Mapping[str, str] | None) -> dict[str, str]:
    view = ContextMetadata({})
    for key, value in (metadata or {}).items():
        view[key] = value
    return view.copy()


class Context:
    __slots__ = (
        # Observers of a traced request find it by its context, without keeping the context alive.
        "__weakref__",
        "_first_token",
        "_id",
        "_killed",
        "_listeners",
        "_metadata",
        "_parent_span_id",
        "_signals",
        "_span_id",
        "_stopped",
        "_trace_id",
        "_waiters",
    )

    def __init__(
        self,
        id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> None:
        """``Context(id=None, metadata=None)`` as in Dynamo; the keyword-only trace ids stand in for
        the trace context Dynamo's runtime would propagate (kit-only)."""
        if id is not None and not isinstance(id, str):
            raise TypeError(f"context id must be a str, got {type(id).__name__}")
        self._id = id if id is not None else f"request-{next(_ids)}"
        self._stopped = False
        self._killed = False
        self._first_token = False
        self._listeners: list[Listener] = []
        self._signals: list[Signal] = []
        self._waiters: list[asyncio.Future[bool]] = []
        self._metadata = _metadata_entries(metadata)
        self._trace_id = trace_id
        self._span_id = span_id
        self._parent_span_id = parent_span_id

    def id(self) -> str:
        return self._id

    @property
    def metadata(self) -> ContextMetadata:
        """The propagated metadata, live: changes through this view are the context's."""
        return ContextMetadata(self._metadata)

    @metadata.setter
    def metadata(self, metadata: Mapping[str, str]) -> None:
        entries = _metadata_entries(metadata)
        self._metadata.clear()
        self._metadata.update(entries)

    @property
    def trace_id(self) -> str | None:
        return self._trace_id

    @property
    def span_id(self) -> str | None:
        return self._span_id

    @property
    def parent_span_id(self) -> str | None:
        return self._parent_span_id

    def trace_headers(self) -> dict[str, str] | None:
        """W3C ``traceparent`` for the engine to forward, or None when the request carries no trace."""
        if self._trace_id is None or self._span_id is None:
            return None
        return {"traceparent": f"00-{self._trace_id}-{self._span_id}-01"}

    def current_span(self) -> Span:
        """The framework's ``engine.generate`` span (a no-op handle here)."""
        return _GENERATE_SPAN

    def start_span(self, name: str, attrs: dict[str, Any] | None = None) -> Span:
        """A child span of ``engine.generate``, usable as a context manager (a no-op handle here)."""
        return Span(name)

    def detached(self, id: str) -> Context:
        """A context with its own id and cancellation, keeping the trace and a snapshot of the metadata."""
        return Context(
            id, self._metadata, trace_id=self._trace_id, span_id=self._span_id, parent_span_id=self._parent_span_id
        )

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
        """Stop this request at once; a kill is also a stop.  Kit-only: Dynamo's Python Context has no
        ``kill()`` (its runtime kills a request when the client goes away)."""
        if self._killed:
            return
        self._killed = True
        self._stopped = True
        # The model decides what a kill after a stop means (nothing more).
        self._signal("kill")

    def async_killed_or_stopped(self) -> asyncio.Future[bool]:
        """A future of the running loop that becomes True once the request is stopped or killed."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._stopped:
            waiter.set_result(True)
            return waiter
        self._waiters.append(waiter)
        waiter.add_done_callback(self._forget_waiter)
        return waiter

    def _forget_waiter(self, waiter: asyncio.Future[bool]) -> None:
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


def cancelled_by_consumer() -> bool:
    """Whether the running task is being cancelled by whoever holds it (the consumer going
    away), as opposed to a ``CancelledError`` that an engine raised on its own."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class HomeLoop:
    """The loop (and its thread) that was running when this was made: calls from any thread
    run there (a signal may come from the engine's thread, a finalizer from anywhere), and
    calls after the loop closed are dropped, since nothing is left to hear them."""

    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def require_running(self, what: str = "this response stream") -> None:
        """Refuse use under another running loop (FAULT-STREAM-LOOP): work started there would never run here."""
        require_home_loop(self._loop, what)

    def call(self, function: Callable[[], object]) -> None:
        """Call ``function`` now on the home thread, or soon on the home loop from another."""
        loop = self._loop
        if loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            function()
            return
        try:
            loop.call_soon_threadsafe(function)
        except RuntimeError:
            if not loop.is_closed():
                raise
            # The loop closed between the check and the call.

    def start(self, work: Callable[[], Coroutine[Any, Any, None]], track: Callable[[asyncio.Task[None]], None]) -> None:
        """Start ``work`` in a task on the home loop, handed to ``track``."""
        self.call(lambda: track(self._loop.create_task(work())))
