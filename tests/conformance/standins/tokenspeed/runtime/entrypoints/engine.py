"""The library's engine: a tokenizer manager that streams counting tokens, one every token interval.

``abort_request(rid)`` behaves as ``--standin-abort`` says:

- ``ends``: a well-behaved library.  The request's stream ends with one last output whose finish reason is
  ``abort``; an abort for a request id not admitted yet is remembered, and that request ends so on arrival.
- ``forgets``: as the published 0.1.x wheels read.  An admitted request is forgotten and nothing more is ever
  streamed for it; an id not admitted yet is ignored.
- ``ignores``: the abort does nothing; the request runs to its token limit.
- ``finishes``: the request ends at once, but with an ordinary ``stop`` finish, as if nobody had aborted it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tokenspeed.runtime.engine.io_struct import GenerateReqInput
from tokenspeed.runtime.utils.server_args import ServerArgs

FIRST_TOKEN_ID = 1000


@dataclass
class _Admitted:
    limit: int
    prompt_tokens: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    ending: str | None = None
    """The finish reason an abort gave it (``abort`` or ``stop``), or None."""
    forgotten: bool = False


class TokenizerManager:
    def __init__(self, server_args: ServerArgs) -> None:
        self.server_args = server_args
        self.context_len = server_args.max_model_len
        self._admitted: dict[str, _Admitted] = {}
        self._aborted_before_admission: set[str] = set()
        self._anonymous = itertools.count(1)

    async def generate_request(self, obj: GenerateReqInput) -> AsyncIterator[dict[str, Any]]:
        rid = obj.rid or f"standin-{next(self._anonymous)}"
        limit = int(obj.sampling_params.get("max_new_tokens") or 16)
        state = _Admitted(limit, len(obj.input_ids))
        if rid in self._aborted_before_admission:
            self._aborted_before_admission.discard(rid)
            state.ending = "abort"
        self._admitted[rid] = state
        produced = 0
        try:
            while True:
                if state.forgotten:
                    await asyncio.Event().wait()  # Nothing is ever streamed for a forgotten request.
                if state.ending is not None:
                    yield self._output([], produced, state, {"type": state.ending, "message": "aborted by request"})
                    return
                try:
                    async with asyncio.timeout(self.server_args.standin_token_interval):
                        await state.woken.wait()
                except TimeoutError:
                    pass
                if state.forgotten or state.ending is not None:
                    continue
                produced += 1
                done = produced >= state.limit
                finish = {"type": "length", "length": state.limit} if done else None
                yield self._output([FIRST_TOKEN_ID + produced], produced, state, finish)
                if done:
                    return
        finally:
            self._admitted.pop(rid, None)

    def abort_request(self, rid: str) -> None:
        behaviour = self.server_args.standin_abort
        if behaviour == "ignores":
            return
        state = self._admitted.get(rid)
        if state is None:
            if behaviour == "ends":
                self._aborted_before_admission.add(rid)
            return
        if behaviour == "forgets":
            state.forgotten = True
            del self._admitted[rid]
        else:
            state.ending = "abort" if behaviour == "ends" else "stop"
        state.woken.set()

    @staticmethod
    def _output(ids: list[int], produced: int, state: _Admitted, finish: dict[str, Any] | None) -> dict[str, Any]:
        meta = {"finish_reason": finish, "prompt_tokens": state.prompt_tokens, "completion_tokens": produced}
        return {"index": 0, "output_ids": ids, "meta_info": meta}


class Engine:
    def __init__(self, server_args: ServerArgs) -> None:
        self.server_args = server_args
        self.tokenizer_manager = TokenizerManager(server_args)
        self.scheduler_info: dict[str, Any] = {"max_model_len": server_args.max_model_len}
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True
