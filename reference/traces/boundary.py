"""The interface through which observers watch an adapter's boundaries.

The adapter calls these methods and decides nothing by them: it calls the
engine through :meth:`Boundary.engine`'s answer, tells each request's
:class:`RequestBoundary` that setup failed, hands it the response items the
consumer is to read, and says when the consumer drops the stream.  A trace sink
that takes observations is an :class:`ObservingSink`; the adapter installs
observers only for such a sink, so without one none of this runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from dynamo_backend_protocol.model import Step
from dynamo_backend_protocol.reference.context import Context

if TYPE_CHECKING:
    from dynamo_backend_protocol.reference.annotated import Annotated

ObservationWriter = Callable[[dict[str, object]], None]
"""Writes one observation (``obs`` and its fields) of one request."""


class ObservingSink(ABC):
    """A trace sink (called with each finished request's steps) that may also take observations."""

    @abstractmethod
    def __call__(self, request: str, steps: Sequence[Step]) -> None: ...

    @abstractmethod
    def open_observations(self, request: str) -> ObservationWriter | None:
        """The writer of one request's observations, or None when this sink takes none."""


class RequestBoundary(ABC):
    """One request's boundaries, as the adapter reports them."""

    @abstractmethod
    def setup_failed(self, raised: BaseException) -> None:
        """``generate`` raised ``raised`` to its caller."""

    @abstractmethod
    def response(self, items: AsyncIterator[Annotated]) -> AsyncIterator[Annotated]:
        """The response items as the consumer is to read them."""

    @abstractmethod
    def dropped(self) -> None:
        """The consumer dropped the response stream (closed it, or let it be collected)."""


class Boundary(ABC):
    """One adapter's boundaries."""

    @abstractmethod
    def engine(self, engine: Any) -> Any:
        """The engine as the adapter is to call it."""

    @abstractmethod
    def request(self, context: Context) -> RequestBoundary:
        """A request arrives (the first thing ``generate`` does)."""
