"""What the adapter hands downstream: a chunk or a typed error, never both."""

from __future__ import annotations

from typing import Any

from dynamo_backend_protocol.model import DynamoError
from dynamo_backend_protocol.model.faults import error_of as as_dynamo_error

__all__ = ["Annotated", "ForwardedData", "as_dynamo_error"]


class Annotated:
    __slots__ = ("data", "error")

    def __init__(self, data: dict[str, Any] | None = None, error: DynamoError | None = None) -> None:
        self.data = data
        self.error = error

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Annotated:
        return cls(data=data)

    @classmethod
    def from_error(cls, error: DynamoError) -> Annotated:
        return cls(error=error)

    def is_error(self) -> bool:
        return self.error is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotated):
            return NotImplemented
        return self.data == other.data and self.error == other.error

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Annotated(error={self.error!r})"
        return f"Annotated(data={self.data!r})"


class ForwardedData(Annotated):
    """A data item as the adapter's per-chunk path builds it: an :class:`Annotated` in every
    respect except that its ``error`` is None for good (a forwarded chunk is never an error).

    Called with no arguments it runs object's own ``__init__`` (C) instead of the Python one,
    and ``error`` is a class attribute rather than a slot to fill, so building one costs an
    allocation and one store of ``data``, which the caller makes.  A copy or a pickle of one
    is a plain :class:`Annotated` equal to it.
    """

    __slots__ = ()
    __init__ = object.__init__
    error = None

    def __reduce__(self) -> tuple[type[Annotated], tuple[dict[str, Any] | None]]:
        return Annotated, (self.data,)
