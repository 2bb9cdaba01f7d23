"""The request machine's full state: control state plus extended variables."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from dynamo_backend_protocol.model.vocabulary import CancelCause, ControlState, Mode, StreamEnd


@dataclass(frozen=True, slots=True)
class RequestState:
    """Everything the protocol remembers about one request.

    The control state alone cannot say whether first-token was seen or how the
    stream ended; these extended variables can.  ``aborts``, ``forwarded`` and
    ``watching`` are derived from the actions performed, never set by a rule
    directly, so a faulty rule cannot hide what it did.
    """

    mode: Mode
    control: ControlState = ControlState.IDLE
    first_token: bool = False
    cancel: CancelCause | None = None
    aborts: int = 0
    ended: StreamEnd | None = None
    watching: bool = False
    forwarded: bool = False
    # Successor cache: events are canonical singletons and states are interned
    # by the machine, so a hot-path step is one dict lookup.
    successors: dict[Any, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # Explorers hash every state many times; the fields never change, so hash them once.
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        compared = tuple(getattr(self, item.name) for item in fields(self) if item.compare)
        object.__setattr__(self, "_hash", hash(compared))

    def __hash__(self) -> int:
        return self._hash

    def evolve(self, **changes: Any) -> RequestState:
        return replace(self, successors={}, **changes)

    def describe(self) -> str:
        """Compact text for counterexamples and traces."""
        parts = [self.control.value, f"mode={self.mode.value}"]
        if self.first_token:
            parts.append("first_token")
        if self.cancel is not None:
            parts.append(f"cancel={self.cancel.value}")
        if self.aborts:
            parts.append(f"aborts={self.aborts}")
        if self.ended is not None:
            parts.append(f"ended={self.ended.value}")
        if self.watching:
            parts.append("watching")
        return " ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "control": self.control.value,
            "mode": self.mode.value,
            "first_token": self.first_token,
            "cancel": None if self.cancel is None else self.cancel.value,
            "aborts": self.aborts,
            "ended": None if self.ended is None else self.ended.value,
            "watching": self.watching,
            "forwarded": self.forwarded,
        }


def initial_state(mode: Mode) -> RequestState:
    return RequestState(mode=mode)
