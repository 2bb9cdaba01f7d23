"""A well-behaved example engine, for every disaggregation mode.

It yields rotating token ids with a small per-token delay, honours
``stop_conditions.max_tokens``, and ends with a ``cancelled`` terminal as soon
as it notices ``context.is_stopped()`` (a kill is also a stop).  Each mode's
hand-off is honoured: a prefill terminal carries ``disaggregated_params``, an
encode request is answered by one ``stop`` terminal with no tokens and an
``encoder_result`` object (Dynamo's encode hand-off), and a decode request
without the prefill worker's ``prefill_result`` is rejected before any
stream exists.  ``dynamo-backend-protocol conform`` checks it when no engine
is named; it is also a template for a real backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from dynamo_backend_protocol.model import BackendError, DynamoError, Mode
from dynamo_backend_protocol.reference.chunks import Chunk, cancelled, length, stop, token, usage
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.engine import EngineConfig, LLMEngine

DEFAULT_DELAY = 0.001
"""Seconds per token: small, so the whole conformance run stays well under a few seconds."""


class SampleEngine(LLMEngine):
    def __init__(
        self,
        model_name: str = "sample-model",
        *,
        mode: Mode = Mode.AGGREGATED,
        max_tokens: int = 16,
        delay: float = DEFAULT_DELAY,
        vocab_size: int = 32000,
    ) -> None:
        if not model_name:
            raise ValueError("SampleEngine: model_name must not be empty")
        if max_tokens < 1:
            raise ValueError(f"SampleEngine: max_tokens must be at least 1, got {max_tokens}")
        if delay < 0:
            raise ValueError(f"SampleEngine: delay must be >= 0 seconds, got {delay}")
        if vocab_size < 1:
            raise ValueError(f"SampleEngine: vocab_size must be at least 1, got {vocab_size}")
        self.model_name = model_name
        self.mode = mode
        self.max_tokens = max_tokens
        self.delay = delay
        self.vocab_size = vocab_size
        self.worker_id: int | None = None

    async def start(self, worker_id: int) -> EngineConfig:
        self.worker_id = worker_id
        return EngineConfig(
            model=self.model_name,
            served_model_name=self.model_name,
            context_length=2048,
            kv_cache_block_size=16,
            total_kv_blocks=1024,
            max_num_seqs=64,
            max_num_batched_tokens=2048,
        )

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        # Checked here, not inside the stream, so a bad request is a setup
        # error: the runtime gets it before any stream exists.
        if self.mode is Mode.DECODE and not isinstance(request.get("prefill_result"), dict):
            raise DynamoError(
                BackendError.INVALID_ARGUMENT,
                "a decode request needs the prefill worker's 'prefill_result' (an object); this one has none",
            )
        if self.mode is Mode.ENCODE:
            return self._encode(request, context)
        return self._stream(request, context)

    async def _encode(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        prompt_tokens = len(request.get("token_ids") or [])
        if not context.is_stopped():
            await asyncio.sleep(self.delay)  # encoding the media
        if context.is_stopped():
            yield cancelled().with_usage(usage(prompt_tokens, 0))
            return
        media = sorted(request.get("multi_modal_data") or {})
        handoff = {"model": self.model_name, "media": media, "embedding_tokens": prompt_tokens}
        yield stop().with_field("encoder_result", handoff).with_usage(usage(prompt_tokens, 0))

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        prompt_tokens = len(request.get("token_ids") or [])
        limit = self._token_limit(request)
        for produced in range(limit):
            if context.is_stopped():
                yield cancelled().with_usage(usage(prompt_tokens, produced))
                return
            await asyncio.sleep(self.delay)
            # Checked again after the wait, so a stop during it costs no extra token.
            if context.is_stopped():
                yield cancelled().with_usage(usage(prompt_tokens, produced))
                return
            token_id = (produced + 1) % self.vocab_size
            if produced == limit - 1:
                yield self._final(request, context, token_id, prompt_tokens, limit)
                return
            yield token(token_id)

    def _token_limit(self, request: dict[str, Any]) -> int:
        stop_conditions = request.get("stop_conditions") or {}
        requested = stop_conditions.get("max_tokens") if isinstance(stop_conditions, dict) else None
        if isinstance(requested, int) and requested > 0:
            return requested
        return self.max_tokens

    def _final(self, request: dict[str, Any], context: Context, token_id: int, prompt: int, produced: int) -> Chunk:
        chunk = length().with_tokens([token_id]).with_usage(usage(prompt, produced))
        if self.mode is Mode.PREFILL:
            # What a decode worker needs to pick the request up: here just who holds the KV blocks.
            chunk.with_field(
                "disaggregated_params",
                {"prefill_worker": self.worker_id, "request_id": context.id(), "prompt_tokens": prompt},
            )
        return chunk

    async def cleanup(self) -> None:
        # Null-safe and idempotent: nothing to release, whatever start did or did not do.
        self.worker_id = None
