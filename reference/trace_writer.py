"""Writing request traces as JSON Lines: one object per fired event."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO

from dynamo_backend_protocol.model import Step


def trace_lines(request: str, steps: Sequence[Step]) -> list[str]:
    return [json.dumps(step.as_record(request), separators=(",", ":")) for step in steps]


class JsonlTraceWriter:
    """A ``trace_sink`` for :class:`EngineAdapter` that appends each finished request to a text stream.

    Request ids are made unique per writer (``id#2`` for a second request with
    the same id) so a replay never mixes two requests.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._seen: dict[str, int] = {}
        self.requests = 0

    def __call__(self, request: str, steps: Sequence[Step]) -> None:
        count = self._seen.get(request, 0) + 1
        self._seen[request] = count
        name = request if count == 1 else f"{request}#{count}"
        for line in trace_lines(name, steps):
            self._out.write(line + "\n")
        self.requests += 1
