"""The response stream the adapter hands the runtime, and how its consumer drops it."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from dynamo_backend_protocol.model import RequestMachine, Step
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.traces.boundary import RequestBoundary


class Forwarding(Protocol):
    """The request a response stream forwards: what the adapter gives it."""

    @property
    def machine(self) -> RequestMachine: ...

    def run(self) -> AsyncIterator[Annotated]:
        """The response items, as one async generator."""

    def require_home_loop(self) -> None:
        """Raise unless the running loop is the one the request was set up on (FAULT-STREAM-LOOP)."""

    def abandon(self) -> None:
        """The consumer dropped the stream without closing it."""

    async def dropped(self) -> None:
        """The consumer closed the stream."""


class ResponseStream:
    """The response stream of one request: an async iterator of :class:`Annotated`.

    Dropping it (``aclose()``, or letting it and the iterator ``async for``
    took from it be garbage-collected) is the protocol's *drop* event.
    """

    __slots__ = ("_boundary", "_driver", "_items", "_reads")

    def __init__(self, driver: Forwarding, boundary: RequestBoundary | None = None) -> None:
        self._driver = driver
        self._boundary = boundary
        self._items = driver.run()
        _drop_when_collected(self._items, driver)
        # Unobserved, ``async for`` reads the driver's generator itself, with no frame of this object's between.
        self._reads = self._items if boundary is None else boundary.response(self._items)

    def __aiter__(self) -> AsyncIterator[Annotated]:
        self._driver.require_home_loop()
        return self._reads

    def __anext__(self) -> Awaitable[Annotated]:
        self._driver.require_home_loop()
        return self._reads.__anext__()

    async def aclose(self) -> None:
        """Drop the stream.  If another task is waiting for its next item, that
        read ends the stream when it returns."""
        if self._boundary is not None:
            self._boundary.dropped()
        if getattr(self._items, "ag_running", False):
            self._driver.abandon()
            return
        await self._items.aclose()  # type: ignore[attr-defined]
        await self._driver.dropped()

    @property
    def machine(self) -> RequestMachine:
        return self._driver.machine

    @property
    def trace(self) -> list[Step]:
        return self._driver.machine.history


_WATCHED: set[weakref.ref[AsyncIterator[Annotated]]] = set()
"""One weak reference per live response generator, kept here so that neither the
generator nor its driver holds it (which would make a reference cycle)."""


def _drop_when_collected(items: AsyncIterator[Annotated], driver: Forwarding) -> None:
    """A consumer that forgets the stream drops it: when the last reference to its
    generator goes (the stream's or an ``async for``'s), the request hears a drop."""

    def collected(watch: weakref.ref[AsyncIterator[Annotated]]) -> None:
        _WATCHED.discard(watch)
        driver.abandon()

    _WATCHED.add(weakref.ref(items, collected))
