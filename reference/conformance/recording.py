"""A recording wrapper around an engine: every call that reaches it, and every item its streams yield.

Hand :class:`RecordingEngine` to the adapter (or call it from the kit) in
place of the engine.  It forwards each call and keeps, in one global order
(a sequence number per observation):

* the lifecycle calls (``start``, ``generate``, ``abort``, ``drain``,
  ``cleanup``) and how they ended, judged as they happen by the lifecycle
  machine of :mod:`dynamo_backend_protocol.model.lifecycle`;
* per request: the raw items the engine's stream yielded, the ``abort``
  calls for it, the signals on its context (stop, kill, first-token), and
  whether its stream was closed.

Calls the engine makes on *itself* (``await self.abort(context)`` inside its
own stream, ``self.cleanup()`` inside ``abort``) reach the engine too, so
they are recorded as well, attributed to the engine: the recorder shadows
those methods on the instance, which is why each wrapper is built for one
freshly made engine and never shared.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import itertools
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent, LifecycleMachine
from dynamo_backend_protocol.reference.conformance.kept import kept
from dynamo_backend_protocol.reference.context import Context, Signal
from dynamo_backend_protocol.reference.engine import start_engine

Caller = Literal["runtime", "engine"]
"""Who made a call: the runtime (adapter or kit) or the engine's own code."""

_CALLED = {
    "start": LifecycleEvent.START_CALLED,
    "abort": LifecycleEvent.ABORT,
    "drain": LifecycleEvent.DRAIN,
    "cleanup": LifecycleEvent.CLEANUP_CALLED,
}
_SUCCEEDED = {"start": LifecycleEvent.START_OK, "cleanup": LifecycleEvent.CLEANUP_OK}
_RAISED = {"start": LifecycleEvent.START_RAISED, "cleanup": LifecycleEvent.CLEANUP_RAISED}
_CALL_WORDS = {
    LifecycleEvent.START_CALLED: "start",
    LifecycleEvent.START_OK: "start returned",
    LifecycleEvent.START_RAISED: "start raised",
    LifecycleEvent.GENERATE: "generate",
    LifecycleEvent.ABORT: "abort",
    LifecycleEvent.DRAIN: "drain",
    LifecycleEvent.CLEANUP_CALLED: "cleanup",
    LifecycleEvent.CLEANUP_OK: "cleanup returned",
    LifecycleEvent.CLEANUP_RAISED: "cleanup raised",
}

# The recorded methods running in the current task, innermost last, so a
# nested self-call can say what it was called from.
_Active = tuple[tuple[int, str], ...]
_ACTIVE: contextvars.ContextVar[_Active] = contextvars.ContextVar("_ACTIVE", default=())


@dataclass(frozen=True)
class LifecycleCall:
    seq: int
    event: LifecycleEvent
    caller: Caller
    inside: str | None
    """The recorded engine method this call was made from, if any."""

    def describe(self) -> str:
        text = _CALL_WORDS[self.event]
        if self.caller == "engine":
            text += f" (by the engine itself{', inside ' + self.inside if self.inside else ''})"
        return text


@dataclass(frozen=True)
class LifecycleBreach:
    """A recorded call or outcome the lifecycle machine forbids."""

    call: LifecycleCall
    rule: str
    phase: str
    """The lifecycle phase the engine was in when the call arrived."""


@dataclass
class AbortCall:
    seq: int
    caller: Caller
    started: float = field(default_factory=time.perf_counter)
    returned_seq: int | None = None
    """When it returned (None while it runs, or if it raised)."""
    seconds: float | None = None
    """How long it took, once it returned or raised."""
    error: BaseException | None = None

    def describe(self) -> str:
        """'returned after 0.3 ms', 'raised KeyError', 'had not returned after 2.01 s'."""
        if self.seconds is None:
            return f"had not returned after {time.perf_counter() - self.started:.2f} s"
        if self.error is not None:
            return f"raised {type(self.error).__name__} after {self.seconds * 1000:.1f} ms"
        return f"returned after {self.seconds * 1000:.1f} ms"


@dataclass(frozen=True)
class ItemSeen:
    seq: int
    item: object


@dataclass
class RequestLog:
    """What reached the engine for one request, and what its stream did."""

    request_id: str
    opened: int
    items: list[ItemSeen] = field(default_factory=list)
    aborts: list[AbortCall] = field(default_factory=list)
    signals: list[tuple[int, Signal]] = field(default_factory=list)
    setup_error: BaseException | None = None
    close_requested: bool = False
    stream: RecordedStream | None = None

    def describe_aborts(self) -> str:
        """What abort() did for this request, for a reason: 'abort() was not called', 'abort() was called
        once and returned after 0.2 ms'."""
        if not self.aborts:
            return "abort() was not called"
        times = "once" if len(self.aborts) == 1 else f"{len(self.aborts)} times"
        return f"abort() was called {times} and {self.aborts[0].describe()}"

    def signals_of(self, *kinds: Signal) -> list[int]:
        """When the request's context heard each signal of these kinds (observation numbers)."""
        return [seq for seq, signal in self.signals if signal in kinds]

    def items_after(self, seq: int) -> int:
        """How many items the engine yielded after the observation numbered ``seq``."""
        return sum(1 for seen in self.items if seen.seq > seq)

    def first_token_seq(self) -> int | None:
        """When first-token happened: the first item with tokens, or a side-channel notice."""
        candidates = [seq for seq, signal in self.signals if signal == "first_token"]
        for seen in self.items:
            token_ids = seen.item.get("token_ids") if isinstance(seen.item, dict) else None
            if isinstance(token_ids, list) and token_ids:
                candidates.append(seen.seq)
                break
        return min(candidates) if candidates else None

    def generator_still_open(self) -> bool:
        """Whether the engine's async generator is still suspended (its ``finally`` has not run)."""
        inner = self.stream.inner if self.stream is not None else None
        return inspect.isasyncgen(inner) and inner.ag_frame is not None


class RecordedStream:
    """The engine's stream, passed through item by item, with each item recorded."""

    __slots__ = ("_clock", "_log", "inner")

    def __init__(self, inner: AsyncIterator[Any], log: RequestLog, clock: Callable[[], int]) -> None:
        self.inner = inner
        self._log = log
        self._clock = clock

    def __aiter__(self) -> RecordedStream:
        return self

    async def __anext__(self) -> Any:
        item = await self.inner.__anext__()
        # What judges the item, not its payload: a run keeps many requests' items at once.
        self._log.items.append(ItemSeen(self._clock(), kept(item)))
        return item

    async def aclose(self) -> None:
        self._log.close_requested = True
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()


class RecordingEngine:
    """Forwards the engine API to ``engine`` and records everything that reaches it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.lifecycle = LifecycleMachine()
        self.calls: list[LifecycleCall] = []
        self.breaches: list[LifecycleBreach] = []
        self.requests: dict[str, RequestLog] = {}
        self._counter = itertools.count(1)
        self._originals: dict[str, Callable[..., Any]] = {}
        for name in _CALLED:
            self._shadow(name)

    def next_seq(self) -> int:
        return next(self._counter)

    # The engine API, as the runtime calls it.

    async def start(self, worker_id: int) -> Any:
        original = self._originals["start"]
        # start_engine decides between start(worker_id) and start() from the original's signature.
        return await self._record("start", "runtime", lambda: start_engine(types.SimpleNamespace(start=original),
                                                                            worker_id))

    async def generate(self, request: dict[str, Any], context: Context) -> RecordedStream:
        request_id = context.id()
        log = RequestLog(request_id, self.next_seq())
        self.requests[request_id] = log
        self._fire(LifecycleEvent.GENERATE, "runtime")
        context.add_listener(lambda signal: log.signals.append((self.next_seq(), signal)))
        try:
            produced = self.engine.generate(request, context)
            if inspect.isawaitable(produced):
                produced = await produced
            aiter_method = getattr(produced, "__aiter__", None)
            if aiter_method is None:
                raise TypeError(f"engine.generate must produce an async iterator, got {type(produced).__name__}")
            inner: AsyncIterator[Any] = aiter_method()
        except Exception as exc:
            log.setup_error = exc
            raise
        log.stream = RecordedStream(inner, log, self.next_seq)
        return log.stream

    async def abort(self, context: Context) -> None:
        original = self._originals.get("abort")
        if original is not None:
            await self._record("abort", "runtime", lambda: original(context), context)

    async def drain(self) -> None:
        original = self._originals.get("drain")
        if original is not None:
            await self._record("drain", "runtime", original)

    async def cleanup(self) -> None:
        await self._record("cleanup", "runtime", self._originals["cleanup"])

    def has(self, name: str) -> bool:
        return name in self._originals

    # Recording.

    def _shadow(self, name: str) -> None:
        original = getattr(self.engine, name, None)
        if not callable(original):
            return
        self._originals[name] = original
        if not (inspect.ismethod(original) and original.__self__ is self.engine):
            return
        recorder = self
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def shadow(*args: Any, **kwargs: Any) -> Any:
                return await recorder._record(name, "engine", lambda: original(*args, **kwargs), *args)

        else:

            @functools.wraps(original)
            def shadow(*args: Any, **kwargs: Any) -> Any:
                return recorder._record_sync(name, lambda: original(*args, **kwargs), *args)

        # Slotted or frozen engines refuse the shadow: calls from the runtime are still recorded.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(self.engine, name, shadow)

    def _begin(self, name: str, caller: Caller, args: tuple[Any, ...]) -> contextvars.Token[_Active]:
        active = _ACTIVE.get()
        inside = next((method for owner, method in reversed(active) if owner == id(self)), None)
        call = self._fire(_CALLED[name], caller, inside)
        if name == "abort" and args:
            log = self._log_for(args[0])
            if log is not None:
                log.aborts.append(AbortCall(call.seq, caller))
        return _ACTIVE.set((*active, (id(self), name)))

    def _end(self, name: str, caller: Caller, token: contextvars.Token[Any], error: BaseException | None) -> None:
        # A call the kit abandoned (it swallowed its cancellation) is closed later by the garbage collector,
        # in another context, where the token cannot be reset; that context is gone anyway.
        with contextlib.suppress(ValueError):
            _ACTIVE.reset(token)
        self._outcome(name, caller, error)

    async def _record(self, name: str, caller: Caller, call: Callable[[], Any], *args: Any) -> Any:
        log = self._log_for(args[0]) if name == "abort" and args else None
        token = self._begin(name, caller, args)
        abort = log.aborts[-1] if log is not None and log.aborts else None
        try:
            result = call()
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            if abort is not None:
                abort.seconds, abort.error = time.perf_counter() - abort.started, exc
            self._end(name, caller, token, exc)
            raise
        if abort is not None:
            abort.seconds, abort.returned_seq = time.perf_counter() - abort.started, self.next_seq()
        self._end(name, caller, token, None)
        return result

    def _record_sync(self, name: str, call: Callable[[], Any], *args: Any) -> Any:
        token = self._begin(name, "engine", args)
        try:
            result = call()
        except BaseException as exc:
            self._end(name, "engine", token, exc)
            raise
        if inspect.isawaitable(result):
            # A plain method returning an awaitable: its outcome is known once awaited.
            _ACTIVE.reset(token)
            return self._outcome_when_awaited(name, result)
        self._end(name, "engine", token, None)
        return result

    async def _outcome_when_awaited(self, name: str, pending: Awaitable[Any]) -> Any:
        try:
            result = await pending
        except BaseException as exc:
            self._outcome(name, "engine", exc)
            raise
        self._outcome(name, "engine", None)
        return result

    def _outcome(self, name: str, caller: Caller, error: BaseException | None) -> None:
        outcome = (_RAISED if error is not None else _SUCCEEDED).get(name)
        if outcome is not None:
            self._fire(outcome, caller)

    def _fire(self, event: LifecycleEvent, caller: Caller, inside: str | None = None) -> LifecycleCall:
        call = LifecycleCall(self.next_seq(), event, caller, inside)
        self.calls.append(call)
        try:
            self.lifecycle.fire(event)
        except ProtocolViolation as violation:
            self.breaches.append(LifecycleBreach(call, violation.rule, violation.where))
        return call

    def _log_for(self, context: object) -> RequestLog | None:
        id_method = getattr(context, "id", None)
        request_id = id_method() if callable(id_method) else None
        return self.requests.get(request_id) if isinstance(request_id, str) else None
