"""What the kit's requests carry for this engine: its model's name, and the mode's hand-off.

Requests name the model ``start()`` returned, as the frontend's do.  A decode
request needs the prefill worker's ``prefill_result``: when the kit can build
the same engine for prefill mode (``--disaggregation-mode`` in its engine
arguments, or a ``mode``/``disaggregation_mode`` keyword of a partial), it
runs one prefill request and hands its terminal's ``disaggregated_params`` on,
as Dynamo's PrefillRouter does; otherwise decode requests carry a synthetic
result in Dynamo's ``PrefillResult`` shape.  Encode requests carry
``multi_modal_data`` and ``mm_processor_kwargs`` in Dynamo's shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
from collections.abc import Mapping
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.conformance.construction import FromArgs
from dynamo_backend_protocol.reference.conformance.drive import FALLBACK_MODEL, PLAIN_MAX_TOKENS, RequestShape
from dynamo_backend_protocol.reference.conformance.session import (
    EngineFactory,
    KitSettings,
    bounded,
    fresh_engine_session,
)
from dynamo_backend_protocol.reference.conformance.upstream import close_raw, model_of, open_raw_stream, read_raw
from dynamo_backend_protocol.reference.context import Context

DISAGGREGATION_MODE_FLAG = "--disaggregation-mode"
"""The flag Dynamo's backends (and its SampleLLMEngine) take their role from."""
MODE_KEYWORDS = ("mode", "disaggregation_mode")


def served_model(config: object) -> str:
    """The name ``start()`` gave; the fallback if it gave none (EmptyModelInConfig says why)."""
    model = model_of(config)
    return model if isinstance(model, str) and model.strip() else FALLBACK_MODEL


async def prepare_requests(settings: KitSettings, model: str) -> RequestShape:
    """The shape of the kit's requests; in decode mode this builds and starts the prefill engine once."""
    if settings.mode is not Mode.DECODE:
        return RequestShape(settings.mode, model)
    prefill = prefill_factory(settings.factory)
    if prefill is None:
        return RequestShape(Mode.DECODE, model, prefill_source="synthetic (cannot build it for prefill)")
    params = await _prefill_params(dataclasses.replace(settings, factory=prefill, mode=Mode.PREFILL), model)
    if params is None:
        return RequestShape(Mode.DECODE, model, prefill_source="synthetic (the prefill run gave no hand-off)")
    return RequestShape(Mode.DECODE, model, {"disaggregated_params": params}, "from a prefill run of the same engine")


async def _prefill_params(settings: KitSettings, model: str) -> dict[str, Any] | None:
    """The ``disaggregated_params`` of one prefill request's terminal, or None if none came."""
    with contextlib.suppress(Exception):
        async with fresh_engine_session(settings) as session:
            request = RequestShape(Mode.PREFILL, model).request(PLAIN_MAX_TOKENS)
            stream = await bounded(open_raw_stream(session.engine, request, Context("conformance-prefill-handoff")),
                                   settings.stream_timeout, "generate")
            run = await read_raw(stream, settings.stream_timeout, after_terminal=0)
            await close_raw(stream)
            terminal = run.terminal_index()
            if terminal is not None:
                item = run.items[terminal]
                params = item.get("disaggregated_params") if isinstance(item, Mapping) else None
                if isinstance(params, dict):
                    return params
    return None


def prefill_factory(factory: EngineFactory) -> EngineFactory | None:
    """The same engine built for prefill mode, when the way it is built names its mode."""
    if isinstance(factory, FromArgs):
        argv = _with_prefill_flag(factory.argv)
        return None if argv is None else FromArgs(factory.cls, argv, factory.label)
    if isinstance(factory, functools.partial):
        for keyword in MODE_KEYWORDS:
            if keyword in factory.keywords:
                current = factory.keywords[keyword]
                return functools.partial(factory, **{keyword: _prefill_like(current)})
    return None


def _with_prefill_flag(argv: list[str]) -> list[str] | None:
    for position, arg in enumerate(argv):
        if arg == DISAGGREGATION_MODE_FLAG and position + 1 < len(argv):
            return [*argv[: position + 1], Mode.PREFILL.value, *argv[position + 2 :]]
        if arg.startswith(DISAGGREGATION_MODE_FLAG + "="):
            return [*argv[:position], f"{DISAGGREGATION_MODE_FLAG}={Mode.PREFILL.value}", *argv[position + 1 :]]
    return None


def _prefill_like(current: object) -> object:
    """``prefill`` in the type the factory was given its mode in (our Mode, another enum, a string)."""
    if isinstance(current, enum.Enum):
        return type(current)(Mode.PREFILL.value)
    return Mode.PREFILL.value if isinstance(current, str) else Mode.PREFILL
