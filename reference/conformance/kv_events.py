"""Upstream's KV event source checks: ``kv_event_sources()`` succeeds and names the same dp ranks each time.

A Worker calls it once after ``start`` to wire KV-aware routing; the kit calls
it twice, as upstream's kit does, and compares the ``dp_rank`` of each source.
It never calls a source's ``on_ready``: starting the engine's publisher is the
Worker's business.  Engines without the method are not judged.
"""

from __future__ import annotations

import inspect
from typing import Any

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.session import (
    KitSettings,
    bounded,
    describe_error,
    shared_engine,
)

F = Failure
OPTIONAL_HOOKS = ("kv_event_sources", "abort")
"""Optional engine methods that some checks exercise (only when the engine has them)."""


class _BadSources(ProtocolError):
    pass


async def _ranks(engine: Any, settings: KitSettings) -> list[int]:
    async def call() -> Any:
        produced = engine.kv_event_sources()
        return await produced if inspect.isawaitable(produced) else produced

    sources = await bounded(call(), settings.stream_timeout, "kv_event_sources")
    if not isinstance(sources, list | tuple):
        raise _BadSources(f"returned {type(sources).__name__}, not a list of sources")
    ranks: list[int] = []
    for position, source in enumerate(sources):
        rank = getattr(source, "dp_rank", None)
        if type(rank) is not int or rank < 0:
            raise _BadSources(f"source #{position + 1} ({type(source).__name__}) has dp_rank {rank!r}, not a rank")
        ranks.append(rank)
    return ranks


async def probe_kv_event_sources(settings: KitSettings) -> Verdicts:
    async with shared_engine(settings) as session:
        calls = []
        for attempt in ("first", "second"):
            try:
                calls.append(await _ranks(session.engine, settings))
            except Exception as error:
                why = str(error) if isinstance(error, _BadSources) else f"raised {describe_error(error)}"
                return {F.KV_EVENT_SOURCES_FAILED: f"the {attempt} kv_event_sources() call after start {why}"}
    first, second = calls
    return {
        F.KV_EVENT_SOURCES_FAILED: None,
        F.KV_EVENT_SOURCES_NOT_IDEMPOTENT: None
        if first == second
        else f"kv_event_sources() gave dp ranks {first} and then {second}; the sources must be the same "
        "for the engine's lifetime (build them once, in start)",
    }
