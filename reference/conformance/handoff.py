"""What the kit's requests carry for this engine: its model's name, and the mode's hand-off.

Requests name the model ``start()`` returned, as the frontend's do.  A decode
request carries what Dynamo's PrefillRouter would give it.  When the kit can
build the same engine for prefill mode (``--disaggregation-mode`` in its engine
arguments, or a ``mode``/``disaggregation_mode`` keyword of a partial), it
starts that prefill engine and runs one request on it:

- if the prefill engine's ``start()`` advertised a bootstrap endpoint
  (``EngineConfig.llm.bootstrap_host``/``bootstrap_port``, as SGLang- and
  TokenSpeed-style engines do), the router's bootstrap path: the prefill
  request and every decode request carry ``bootstrap_info`` in Dynamo's
  ``BootstrapInfo`` shape (``bootstrap_host``, ``bootstrap_port``, and a
  ``bootstrap_room`` drawn in the router's signed 64-bit range);
- ``prefill_result`` is ``{"disaggregated_params": ...}`` taken from whichever
  prefill chunk carries them (the terminal, or an earlier hand-off chunk).

Otherwise decode requests carry a synthetic result in Dynamo's
``PrefillResult`` shape.  An engine checked in prefill mode that advertises a
bootstrap endpoint gets ``bootstrap_info`` on its requests, as from the router.
Encode requests carry ``multi_modal_data`` and ``mm_processor_kwargs`` in
Dynamo's shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import secrets
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


BOOTSTRAP_ROOM_BITS = 63
"""Dynamo's router draws bootstrap rooms in the signed 64-bit range SGLang's field takes."""


async def prepare_requests(settings: KitSettings, model: str) -> RequestShape:
    """The shape of the kit's requests; in decode mode this builds and starts the prefill engine once."""
    if settings.mode is Mode.PREFILL:
        # The router's bootstrap path sends the prefill worker the bootstrap_info too.
        endpoint = bootstrap_endpoint(settings.session().config)
        if endpoint is not None:
            return RequestShape(Mode.PREFILL, model, bootstrap_info=bootstrap_info(endpoint))
    if settings.mode is not Mode.DECODE:
        return RequestShape(settings.mode, model)
    prefill = prefill_factory(settings.factory)
    if prefill is None:
        return RequestShape(Mode.DECODE, model, prefill_source="synthetic (cannot build it for prefill)")
    handoff = await _prefill_handoff(dataclasses.replace(settings, factory=prefill, mode=Mode.PREFILL), model)
    if handoff.params is None and handoff.bootstrap_info is None:
        return RequestShape(Mode.DECODE, model, prefill_source="synthetic (the prefill run gave no hand-off)")
    prefill_result = {"disaggregated_params": handoff.params} if handoff.params is not None else None
    source = "from a prefill run of the same engine" if handoff.params is not None else (
        "synthetic (the prefill run gave no disaggregated_params)")
    if handoff.bootstrap_info is not None:
        source += "; bootstrap_info from its advertised bootstrap endpoint"
    return RequestShape(Mode.DECODE, model, prefill_result, source, handoff.bootstrap_info)


@dataclasses.dataclass(frozen=True)
class _Handoff:
    params: dict[str, Any] | None = None
    bootstrap_info: dict[str, Any] | None = None


def bootstrap_endpoint(config: object) -> tuple[str, int] | None:
    """The bootstrap host and port a prefill engine's ``start()`` advertised (``EngineConfig.llm``), or None."""
    llm = config.get("llm") if isinstance(config, Mapping) else getattr(config, "llm", None)
    fields = [llm.get(name) if isinstance(llm, Mapping) else getattr(llm, name, None)
              for name in ("bootstrap_host", "bootstrap_port")]
    host, port = fields
    if isinstance(host, str) and host and isinstance(port, int) and not isinstance(port, bool):
        return host, port
    return None


def bootstrap_info(endpoint: tuple[str, int]) -> dict[str, Any]:
    """Dynamo's ``BootstrapInfo`` for one request, as the PrefillRouter builds it from the advertised endpoint."""
    host, port = endpoint
    return {"bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": secrets.randbits(BOOTSTRAP_ROOM_BITS)}


async def _prefill_handoff(settings: KitSettings, model: str) -> _Handoff:
    """One prefill request's hand-off: the ``disaggregated_params`` of the first chunk that carries them, and
    the ``bootstrap_info`` the router gave it if the engine advertised a bootstrap endpoint."""
    info: dict[str, Any] | None = None
    with contextlib.suppress(Exception):
        async with fresh_engine_session(settings) as session:
            endpoint = bootstrap_endpoint(session.config)
            request = RequestShape(Mode.PREFILL, model).request(PLAIN_MAX_TOKENS)
            if endpoint is not None:
                info = request["bootstrap_info"] = bootstrap_info(endpoint)
            stream = await bounded(open_raw_stream(session.engine, request, Context("conformance-prefill-handoff")),
                                   settings.stream_timeout, "generate")
            run = await read_raw(stream, settings.stream_timeout, after_terminal=0)
            await close_raw(stream)
            for item in run.items:
                params = item.get("disaggregated_params") if isinstance(item, Mapping) else None
                if isinstance(params, dict):
                    return _Handoff(params, info)
    return _Handoff(None, info)


def prefill_factory(factory: EngineFactory) -> EngineFactory | None:
    """The same engine built for prefill mode, when the way it is built names its mode."""
    if isinstance(factory, FromArgs):
        argv = with_prefill_flag(factory.argv)
        return None if argv is None else FromArgs(factory.cls, argv, factory.label)
    if isinstance(factory, functools.partial):
        for keyword in MODE_KEYWORDS:
            if keyword in factory.keywords:
                current = factory.keywords[keyword]
                return functools.partial(factory, **{keyword: _prefill_like(current)})
    return None


def with_prefill_flag(argv: list[str]) -> list[str] | None:
    """``argv`` with its ``--disaggregation-mode`` value replaced by prefill; None without the flag."""
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
