"""The engine interface in Dynamo's Python shape, and how the adapter calls it.

Engines may subclass :class:`LLMEngine` or just have the methods (duck
typing).  ``start`` may take ``worker_id`` (current Dynamo) or nothing (older
releases); ``generate`` may be an async generator or an ``async def`` that
returns an async iterator (so it can fail before any stream exists).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.reference.context import Context


@dataclass
class EngineConfig:
    """What ``start`` returns: registration metadata.  ``model`` must not be empty."""

    model: str
    served_model_name: str | None = None
    runtime_data: dict[str, Any] | None = None
    model_aliases: list[str] = field(default_factory=list)
    # Token-pipeline registration; None means "not advertised".
    context_length: int | None = None
    kv_cache_block_size: int | None = None
    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    data_parallel_size: int | None = None
    data_parallel_start_rank: int | None = None
    bootstrap_host: str | None = None
    bootstrap_port: int | None = None


class LLMEngine:
    """Base class for engines; override ``start``, ``generate`` and ``cleanup``."""

    async def start(self, worker_id: int) -> EngineConfig:
        raise NotImplementedError

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    async def abort(self, context: Context) -> None:
        """Release what an in-flight request holds.  Optional."""

    async def drain(self) -> None:
        """Finish in-flight work before shutdown.  Optional."""

    async def kv_event_sources(self) -> list[Any]:
        """The KV event sources (one per data-parallel rank) for KV-aware routing; none by default, as in Dynamo."""
        return []

    async def cleanup(self) -> None:
        raise NotImplementedError


def is_engine(candidate: object) -> bool:
    """Has at least ``start``, ``generate`` and ``cleanup`` as callables."""
    return all(callable(getattr(candidate, name, None)) for name in ("start", "generate", "cleanup"))


def missing_engine_methods(candidate: object) -> list[str]:
    return [name for name in ("start", "generate", "cleanup") if not callable(getattr(candidate, name, None))]


def _start_takes_worker_id(engine: object) -> bool:
    try:
        signature = inspect.signature(engine.start)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


async def start_engine(engine: object, worker_id: int = 0) -> Any:
    """Call ``start(worker_id)``, or ``start()`` for engines of older Dynamo releases."""
    start = engine.start  # type: ignore[attr-defined]
    result = start(worker_id) if _start_takes_worker_id(engine) else start()
    if inspect.isawaitable(result):
        result = await result
    return result


def stream_of(produced: object) -> AsyncIterator[Any]:
    """The async iterator ``generate`` produced; TypeError when it produced none."""
    aiter_method = getattr(produced, "__aiter__", None)
    if aiter_method is None:
        raise TypeError(f"engine.generate must produce an async iterator, got {type(produced).__name__}")
    iterator: AsyncIterator[Any] = aiter_method()
    if not callable(getattr(iterator, "__anext__", None)):
        raise TypeError(
            f"engine.generate produced a {type(produced).__name__} whose __aiter__ returned "
            f"{type(iterator).__name__}, which is not an async iterator (no __anext__)"
        )
    return iterator


class Reads:
    """An engine iterator that is not an async generator, read through its own
    ``__anext__``: ``async for`` would call its ``__aiter__`` a second time."""

    __slots__ = ("_next",)

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self._next = stream.__anext__

    def __aiter__(self) -> Reads:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._next()


async def call_optional(engine: object, name: str, *args: Any) -> None:
    """Call an optional hook (``abort``, ``drain``) if the engine has it."""
    hook = getattr(engine, name, None)
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result
