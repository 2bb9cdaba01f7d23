"""Engines written the way Dynamo's are, without Dynamo installed: built by ``from_args``, one-chunk
prefill and encode roles, Dynamo's finish reasons.  Plain dicts and duck typing only."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

MODEL = "style-model"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class StyleWorkerConfig:
    namespace: str
    disaggregation_mode: str


class FromArgsEngine:
    """A Dynamo-style engine: ``from_args`` sets its role; in prefill it hands off a handle that its own
    decode role insists on (so a synthetic prefill_result is refused), and it rejects requests for any
    model but the one start() named.  Ends a stopped stream with vLLM's ``abort`` spelling."""

    def __init__(self, mode: str = "agg", max_tokens: int = 6) -> None:
        self.mode = mode
        self.max_tokens = max_tokens

    @classmethod
    async def from_args(cls, argv: list[str] | None = None) -> tuple[FromArgsEngine, StyleWorkerConfig]:
        parser = argparse.ArgumentParser(prog="style-engine")
        parser.add_argument("--disaggregation-mode", choices=["agg", "prefill", "decode", "encode"], default="agg")
        parser.add_argument("--max-tokens", type=int, default=6)
        args = parser.parse_args(argv)
        return cls(args.disaggregation_mode, args.max_tokens), StyleWorkerConfig("dynamo", args.disaggregation_mode)

    async def start(self, worker_id: int) -> dict[str, Any]:
        return {"model": MODEL}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        if request.get("model") != MODEL:
            raise ValueError(f"this worker serves {MODEL!r}, not {request.get('model')!r}")
        prompt = len(request["token_ids"])
        if self.mode == "decode":
            handle = request["prefill_result"]["disaggregated_params"].get("handle", "")
            if not handle.startswith("kv-of-"):
                raise ValueError(f"no KV blocks for prefill hand-off {request['prefill_result']!r}")
        if self.mode == "encode":
            async for handoff in _encode(prompt, context, honour_stop=True):
                yield handoff
            return
        limit = 1 if self.mode == "prefill" else request["stop_conditions"].get("max_tokens") or self.max_tokens
        for step in range(limit):
            if context.is_stopped():
                yield {"token_ids": [], "index": 0, "finish_reason": "abort", "completion_usage": usage(prompt, step)}
                return
            await asyncio.sleep(0.0005)
            chunk: dict[str, Any] = {"token_ids": [step + 1], "index": 0}
            if step == limit - 1:
                chunk.update(finish_reason="eos", completion_usage=usage(prompt, limit))
                if self.mode == "prefill":
                    chunk["disaggregated_params"] = {"handle": f"kv-of-{context.id()}"}
            yield chunk

    async def cleanup(self) -> None:
        pass


async def _encode(prompt: int, context: Any, honour_stop: bool) -> AsyncIterator[dict[str, Any]]:
    await asyncio.sleep(0.0005)
    if honour_stop and context.is_stopped():
        yield {"token_ids": [], "index": 0, "finish_reason": "cancelled", "completion_usage": usage(prompt, 0)}
        return
    yield {"token_ids": [], "index": 0, "finish_reason": "stop", "encoder_result": {"handle": "enc-1"},
           "completion_usage": usage(prompt, 0)}


class OneChunkPrefillEngine:
    """A prefill worker clamped to one token, as Dynamo's enforce_prefill_max_tokens makes it: its
    stream is the one terminal chunk; a stop before it runs gives a cancelled terminal instead."""

    disaggregation_mode = "prefill"
    honour_stop = True

    async def start(self, worker_id: int) -> dict[str, Any]:
        return {"model": MODEL}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        prompt = len(request["token_ids"])
        if self.honour_stop and context.is_stopped():
            yield {"token_ids": [], "index": 0, "finish_reason": "cancelled", "completion_usage": usage(prompt, 0)}
            return
        await asyncio.sleep(0.0005)
        yield {"token_ids": [7], "index": 0, "finish_reason": "length", "completion_usage": usage(prompt, 1),
               "disaggregated_params": {"handle": "kv-1"}}

    async def cleanup(self) -> None:
        pass


class StopIgnoringPrefillEngine(OneChunkPrefillEngine):
    """The same prefill worker, never looking at the context."""

    honour_stop = False


class OneChunkEncodeEngine:
    """An encode worker: one 'stop' hand-off chunk; cancelled when stopped before it."""

    disaggregation_mode = "encode"
    honour_stop = True

    async def start(self, worker_id: int) -> dict[str, Any]:
        return {"model": MODEL}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        if not request.get("multi_modal_data"):
            raise ValueError("an encode request carries multi_modal_data")
        async for chunk in _encode(len(request["token_ids"]), context, self.honour_stop):
            yield chunk

    async def cleanup(self) -> None:
        pass


class StopIgnoringEncodeEngine(OneChunkEncodeEngine):
    """The same encode worker, never looking at the context."""

    honour_stop = False


class FinishReasonEngine(FromArgsEngine):
    """Ends every completed request with the finish reason it was built with (Dynamo's vocabulary)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        async for chunk in super().generate(request, context):
            if chunk.get("finish_reason") == "eos":
                chunk["finish_reason"] = self.reason
            yield chunk


class OneEncoderAtATimeEngine(OneChunkEncodeEngine):
    """Shares one encoder buffer: a request that arrives while another is encoding hands off the
    buffer's name, a string, instead of its own encoder_result object."""

    def __init__(self) -> None:
        self.encoding = False

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        shared = self.encoding
        self.encoding = True
        try:
            async for chunk in super().generate(request, context):
                if shared and "encoder_result" in chunk:
                    chunk["encoder_result"] = "encoder-buffer-0"
                yield chunk
        finally:
            self.encoding = False


class BootstrapHandoffEngine:
    """An SGLang/TokenSpeed-style engine: its prefill role advertises a bootstrap endpoint from start() and
    hands off on its first, token-less chunk (``disaggregated_params`` being the bootstrap_info it was given);
    its decode role refuses a request without Dynamo's ``bootstrap_info`` or whose prefill_result names
    another room."""

    BOOTSTRAP_HOST = "10.1.2.3"
    BOOTSTRAP_PORT = 8998

    def __init__(self, mode: str = "agg") -> None:
        self.disaggregation_mode = mode

    async def start(self, worker_id: int) -> dict[str, Any]:
        if self.disaggregation_mode != "prefill":
            return {"model": MODEL}
        return {"model": MODEL, "llm": {"bootstrap_host": self.BOOTSTRAP_HOST, "bootstrap_port": self.BOOTSTRAP_PORT}}

    async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        prompt = len(request["token_ids"])
        info = request.get("bootstrap_info")
        well_formed = isinstance(info, dict) and info.get("bootstrap_host") == self.BOOTSTRAP_HOST and isinstance(
            info.get("bootstrap_room"), int
        )
        if self.disaggregation_mode in ("prefill", "decode") and not well_formed:
            raise ValueError(f"requires bootstrap_info from Dynamo's prefill router, got {info!r}")
        if self.disaggregation_mode == "decode" and request["prefill_result"]["disaggregated_params"] != info:
            raise ValueError("the prefill hand-off names another bootstrap room")
        if self.disaggregation_mode == "prefill":
            yield {"token_ids": [], "index": 0, "disaggregated_params": info}
        limit = 1 if self.disaggregation_mode == "prefill" else request["stop_conditions"].get("max_tokens") or 6
        for step in range(limit):
            if context.is_stopped():
                yield {"token_ids": [], "index": 0, "finish_reason": "cancelled",
                       "completion_usage": usage(prompt, step)}
                return
            await asyncio.sleep(0.0005)
            chunk: dict[str, Any] = {"token_ids": [step + 1], "index": 0}
            if step == limit - 1:
                chunk.update(finish_reason="length", completion_usage=usage(prompt, limit))
            yield chunk

    async def cleanup(self) -> None:
        pass
