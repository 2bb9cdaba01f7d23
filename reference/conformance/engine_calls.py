"""Calling engine code so that whatever it raises is an ordinary, printable failure of the engine.

An engine may raise more than ``Exception``: ``sys.exit()``, ``KeyboardInterrupt``,
``GeneratorExit`` or its own ``CancelledError`` (the spec's FAULT-ENGINE-RAISES counts an
engine-raised one as an engine failure), or a ``BaseException`` subclass of its own.  Left
alone, ``SystemExit`` leaves the event loop and ends the run with no verdict, and the rest
print a traceback.  :func:`guarded` turns each into :class:`EngineRaised`, an ``Exception``
the check that made the call reports by name.  :func:`safe_text` prints an exception whose
``str()`` or ``repr()`` raises, and :func:`read_attribute` reads an attribute whose property
raises, without either escaping as a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.context import cancelled_by_consumer

T = TypeVar("T")


class EngineRaised(ProtocolError):
    """The engine raised something that is not an ``Exception``; ``original`` is what it raised."""

    def __init__(self, original: BaseException) -> None:
        self.original = original
        super().__init__(f"{type(original).__name__}{_detail(original)}")


class AttributeRaised(ProtocolError):
    """Reading one of the engine's attributes raised."""

    def __init__(self, owner: str, name: str, error: BaseException) -> None:
        self.owner = owner
        self.name = name
        self.error = error
        super().__init__(f"reading {owner}.{name} raised {type(error).__name__}{_detail(error)}")


def _detail(error: BaseException) -> str:
    text = safe_text(error)
    return f": {text}" if text else ""


def safe_text(error: BaseException) -> str:
    """``str(error)``, or a placeholder when the exception's own ``__str__`` raises (or returns no str)."""
    try:
        text = str(error)
    except BaseException:
        return "<its message could not be printed>"
    return text if isinstance(text, str) else "<its message could not be printed>"


def safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except BaseException:
        return f"<{type(value).__name__} that cannot be printed>"
    return text if isinstance(text, str) else f"<{type(value).__name__} that cannot be printed>"


def is_own_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is the cancellation of the task running now (the kit's bound, or Ctrl-C), as
    opposed to a ``CancelledError`` the engine raised on its own."""
    # Outside any task nobody can have cancelled us, so there the error is the engine's own.
    return isinstance(error, asyncio.CancelledError) and asyncio.current_task() is not None and cancelled_by_consumer()


def as_engine_failure(error: BaseException) -> BaseException:
    """What the kit should see in place of ``error``: itself for an ``Exception`` or the kit's own
    cancellation, :class:`EngineRaised` for anything else the engine raised."""
    if isinstance(error, Exception) or is_own_cancellation(error):
        return error
    return EngineRaised(error)


async def guarded(work: Awaitable[T]) -> T:
    """``await work``, with every non-``Exception`` the engine raises turned into :class:`EngineRaised`.

    ``GeneratorExit`` passes: it is also how Python closes an abandoned coroutine, which must not be
    answered with another exception; :func:`.watchdog.within` types an engine-raised one.
    """
    try:
        return await work
    except (Exception, GeneratorExit):
        raise
    except BaseException as error:
        failure = as_engine_failure(error)
        if failure is error:
            raise
        raise failure from None


def read_attribute(owner: object, name: str, described_as: str) -> object:
    """``getattr(owner, name, None)``, raising :class:`AttributeRaised` if the attribute itself raises
    (a property, or a module ``__getattr__``), whatever it raises."""
    try:
        return getattr(owner, name, None)
    except BaseException as error:
        if is_own_cancellation(error):
            raise
        raise AttributeRaised(described_as, name, error) from None
