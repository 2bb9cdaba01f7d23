"""Dynamo's typed error taxonomy, as plain data (no I/O)."""

from __future__ import annotations

import enum


class BackendError(enum.Enum):
    """The ``BackendError`` variants an engine can report."""

    INVALID_ARGUMENT = "InvalidArgument"
    CANNOT_CONNECT = "CannotConnect"
    ENGINE_SHUTDOWN = "EngineShutdown"
    STREAM_INCOMPLETE = "StreamIncomplete"
    CANCELLED = "Cancelled"
    RESPONSE_TIMEOUT = "ResponseTimeout"
    DISCONNECTED = "Disconnected"
    CONNECTION_TIMEOUT = "ConnectionTimeout"
    UNKNOWN = "Unknown"

    @property
    def display(self) -> str:
        """How the kind reads when displayed, e.g. ``BackendInvalidArgument``."""
        return f"Backend{self.value}"

    @classmethod
    def parse(cls, text: str) -> BackendError:
        """Accepts the variant (``InvalidArgument``) or its display form."""
        name = text.strip()
        if name.startswith("Backend"):
            name = name[len("Backend"):]
        for kind in cls:
            if kind.value == name:
                return kind
        raise ValueError(f"unknown backend error kind {text!r}")


class DynamoError(Exception):
    """A typed error: a :class:`BackendError` kind and a message.

    ``str()`` reads ``Backend<Variant>: <message>`` so the kind survives any
    path that only keeps the text.
    """

    def __init__(self, kind: BackendError, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def error_type(self) -> BackendError:
        return self.kind

    def __str__(self) -> str:
        return f"{self.kind.display}: {self.message}"

    def __repr__(self) -> str:
        return f"DynamoError({self.kind.display}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DynamoError):
            return NotImplemented
        return self.kind is other.kind and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.kind, self.message))
