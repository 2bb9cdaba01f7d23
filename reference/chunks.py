"""Helpers that build the chunk dicts an engine yields.

``token(7)`` is a one-token non-terminal chunk; ``stop()``, ``eos()``,
``length()``, ``cancelled()``, ``content_filter()`` and ``error(msg)`` are
terminals in Dynamo's finish-reason vocabulary, refined fluently:
``length().with_tokens([22]).with_usage(usage(3, 2))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from dynamo_backend_protocol.model.vocabulary import ERROR_MESSAGE_PREFIX

Usage = dict[str, int]


class Chunk(dict[str, Any]):
    """A chunk dict with fluent refiners; it *is* a dict, so engines may yield it as is."""

    def with_tokens(self, token_ids: Iterable[int]) -> Self:
        self["token_ids"] = list(token_ids)
        return self

    def with_usage(self, completion_usage: Usage) -> Self:
        self["completion_usage"] = dict(completion_usage)
        return self

    def with_index(self, index: int) -> Self:
        self["index"] = index
        return self

    def with_field(self, key: str, value: Any) -> Self:
        self[key] = value
        return self


def token(token_id: int) -> Chunk:
    return Chunk(token_ids=[token_id], index=0)


def _terminal(reason: str) -> Chunk:
    return Chunk(token_ids=[], index=0, finish_reason=reason)


def stop() -> Chunk:
    return _terminal("stop")


def eos() -> Chunk:
    """The model produced its end-of-sequence token."""
    return _terminal("eos")


def length() -> Chunk:
    return _terminal("length")


def cancelled() -> Chunk:
    return _terminal("cancelled")


def content_filter() -> Chunk:
    """The output was withheld by a content filter."""
    return _terminal("content_filter")


def error(message: str = "") -> Chunk:
    """The string form of a mid-stream failure, ``finish_reason: "error: <message>"`` as Dynamo writes it
    (plain ``"error"`` without a message); the error kind is lost, so prefer raising DynamoError."""
    return _terminal(f"{ERROR_MESSAGE_PREFIX}{message}" if message else "error")


_U64_MAX = 2**64 - 1


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    """Completion usage; the total saturates like Dynamo's unsigned counters."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": min(prompt_tokens + completion_tokens, _U64_MAX),
    }
