"""Observers at the adapter's boundaries, for observation traces.

They sit outside the adapter's decisions: a proxy engine records what
``generate`` produced, each item its stream yielded or what it raised, and
each call the engine received (``abort``, the close of its stream); a context
listener records each signal; a response stream wrapping the adapter's records
what the consumer received and how its stream ended.  The adapter installs
them only when its trace sink takes observations, so without one nothing here
runs.  A failing sink is the adapter's sink failure (FAULT-SINK-ISOLATED):
counted once per request, and that request's later observations are dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.faults import error_name, stream_fault
from dynamo_backend_protocol.model.traces.observed import item_name
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.context import Context, Signal, cancelled_by_consumer
from dynamo_backend_protocol.reference.engine import call_optional
from dynamo_backend_protocol.reference.traces.boundary import (
    Boundary,
    ObservationWriter,
    ObservingSink,
    RequestBoundary,
)


class RequestObservations(RequestBoundary):
    """What crossed the boundaries of one request, written as it happens."""

    __slots__ = ("_failed", "_on_failure", "_write", "client_over", "context", "last_item", "position")

    def __init__(self, write: ObservationWriter, context: Context, on_failure: Callable[[], None]) -> None:
        self._write = write
        self._failed = False
        self._on_failure = on_failure
        self.context = context
        self.position = 0
        self.last_item: object = None
        self.client_over = False

    def note(self, obs: str, **fields: object) -> None:
        if self._failed:
            return
        try:
            self._write({"obs": obs, **fields})
        except Exception:
            self._failed = True
            self._on_failure()

    def heard(self, signal: Signal) -> None:
        self.note(f"context.{signal}")

    def client_ended(self, obs: str, **fields: object) -> None:
        if self.client_over:
            return
        self.client_over = True
        self.context.remove_listener(self.heard)
        self.note(obs, **fields)

    def setup_failed(self, raised: BaseException) -> None:
        self.client_ended("client.setup_error", error=error_name(raised))

    def response(self, items: AsyncIterator[Annotated]) -> AsyncIterator[Annotated]:
        return ObservedResponse(items, self)

    def dropped(self) -> None:
        self.client_ended("client.drop")


class _Unobserved(RequestBoundary):
    """A request the sink takes no observations of."""

    def setup_failed(self, raised: BaseException) -> None:
        return None

    def response(self, items: AsyncIterator[Annotated]) -> AsyncIterator[Annotated]:
        return items

    def dropped(self) -> None:
        return None


_UNOBSERVED = _Unobserved()


class Observers(Boundary):
    """The observers of one adapter: which request each context belongs to, and the proxies."""

    def __init__(self, sink: ObservingSink, mode: Mode, validate: bool, on_failure: Callable[[str], None]) -> None:
        self._sink = sink
        self._on_failure = on_failure
        self.mode = mode
        self.validate = validate
        self._requests: weakref.WeakKeyDictionary[Context, RequestObservations] = weakref.WeakKeyDictionary()

    def of(self, context: Context) -> RequestObservations | None:
        return self._requests.get(context)

    def engine(self, engine: Any) -> Any:
        return ObservedEngine(engine, self)

    def request(self, context: Context) -> RequestBoundary:
        name = context.id()
        write = self._sink.open_observations(name)
        if write is None:
            return _UNOBSERVED
        log = RequestObservations(write, context, lambda: self._on_failure(name))
        self._requests[context] = log
        log.note("client.generate", mode=self.mode.value)
        # Listen first, then catch up, as the adapter does: no signal falls between the two.
        context.add_listener(log.heard)
        for signal in context.signals():
            log.heard(signal)
        return log

class ObservedEngine:
    """The engine as the adapter sees it: every call it receives and all it produces is noted."""

    def __init__(self, engine: Any, observers: Observers) -> None:
        self._engine = engine
        self._observers = observers

    def generate(self, request: dict[str, Any], context: Context) -> Any:
        log = self._observers.of(context)
        if log is None:
            return self._engine.generate(request, context)
        try:
            produced = self._engine.generate(request, context)
        except BaseException as exc:
            log.note("engine.setup_failed", error=error_name(exc))
            raise
        if inspect.isawaitable(produced):
            return self._set_up_later(produced, log)
        return self._stream(produced, log)

    async def _set_up_later(self, produced: Any, log: RequestObservations) -> Any:
        try:
            result = await produced
        except BaseException as exc:
            log.note("engine.setup_failed", error=error_name(exc))
            raise
        return self._stream(result, log)

    def _stream(self, produced: Any, log: RequestObservations) -> Any:
        aiter_method = getattr(produced, "__aiter__", None)
        if aiter_method is None:
            log.note("engine.setup_failed", error="not an async iterator")
            return produced
        try:
            iterator = aiter_method()
        except BaseException as exc:
            log.note("engine.setup_failed", error=error_name(exc))
            raise
        if not callable(getattr(iterator, "__anext__", None)):
            log.note("engine.setup_failed", error="not an async iterator")
            return produced
        log.note("engine.setup")
        return ObservedEngineStream(iterator, log, self._observers)

    async def abort(self, context: Context) -> None:
        log = self._observers.of(context)
        if log is not None:
            log.note("engine.abort")
        await call_optional(self._engine, "abort", context)


class ObservedEngineStream:
    """The engine's stream: each item it yields, how its reading ended, and its closing."""

    def __init__(self, inner: AsyncIterator[Any], log: RequestObservations, observers: Observers) -> None:
        self._inner = inner
        self._log = log
        self.mode = observers.mode
        self.validate = observers.validate

    def __aiter__(self) -> ObservedEngineStream:
        return self

    @property
    def ag_running(self) -> bool:
        return bool(getattr(self._inner, "ag_running", False))

    async def __anext__(self) -> Any:
        log = self._log
        try:
            item = await self._inner.__anext__()
        except StopAsyncIteration:
            log.note("engine.end")
            raise
        except BaseException as exc:
            fault = stream_fault(exc, asyncio.CancelledError, cancelled_by_consumer())
            if fault is None:
                log.note("engine.cancel")
            elif not fault.propagates:
                log.note("engine.raise", error=error_name(exc))
            else:
                log.note("engine.interrupt", error=type(exc).__name__)
            raise
        log.position += 1
        log.last_item = item
        log.note("engine.item", item=item_name(item, log.position, self.mode, self.validate), n=log.position)
        return item

    async def aclose(self) -> None:
        self._log.note("engine.close")
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


class ObservedResponse:
    """The response items as the consumer reads them: what it received, how its stream ended."""

    __slots__ = ("_items", "_log")

    def __init__(self, items: AsyncIterator[Annotated], log: RequestObservations) -> None:
        self._items = items
        self._log = log

    def __aiter__(self) -> ObservedResponse:
        # Every read passes through this observer, and ``async for`` holds it, so that it is
        # not finalised (a drop) while the consumer is still reading.
        return self

    async def __anext__(self) -> Annotated:
        log = self._log
        try:
            item = await self._items.__anext__()
        except StopAsyncIteration:
            log.client_ended("client.end")
            raise
        except BaseException as exc:
            log.client_ended("client.raise", error=type(exc).__name__)
            raise
        if item.error is not None:
            log.note("client.item", item="error", error=error_name(item.error))
        else:
            log.note("client.item", item="data", n=log.position if item.data is log.last_item else None)
        return item

    def __del__(self) -> None:
        self._log.dropped()
