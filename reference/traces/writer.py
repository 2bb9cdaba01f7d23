"""Writing request traces as JSON Lines.

Two formats.  *Observations* (the default): one object per thing that crossed
a boundary of the adapter (engine, context, consumer), written as it happens
by the observers of :mod:`reference.traces.observers`; ``trace`` infers the
model run from them, so an adapter that logs one thing and does another is
caught.  *Steps*: one object per event the adapter's own machine fired,
written when the request is over; it shows what the adapter decided, not what
it did.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import IO, Literal

from dynamo_backend_protocol.model import Step
from dynamo_backend_protocol.model.machine import step_record
from dynamo_backend_protocol.reference.traces.boundary import ObservationWriter, ObservingSink

TraceFormat = Literal["observations", "steps"]


def trace_lines(request: str, steps: Sequence[Step]) -> list[str]:
    return [json.dumps(step_record(step, request), separators=(",", ":")) for step in steps]


class JsonlTraceWriter(ObservingSink):
    """A ``trace_sink`` for :class:`EngineAdapter` that appends traces to a text stream.

    Request ids are made unique per writer (``id#2`` for a second request with
    the same id) so a check never mixes two requests.  Observations may come
    from any thread (a stop from the engine's thread): each line is written whole.
    """

    def __init__(self, out: IO[str], format: TraceFormat = "observations") -> None:
        if format not in ("observations", "steps"):
            raise ValueError(f"unknown trace format {format!r}; valid formats: observations, steps")
        self._out = out
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.format: TraceFormat = format
        self.requests = 0

    def _unique(self, request: str) -> str:
        count = self._seen.get(request, 0) + 1
        self._seen[request] = count
        self.requests += 1
        return request if count == 1 else f"{request}#{count}"

    def __call__(self, request: str, steps: Sequence[Step]) -> None:
        """The adapter's call when a request is Done; only the steps format writes anything then."""
        if self.format == "steps":
            with self._lock:
                name = self._unique(request)
                self._out.write("".join(line + "\n" for line in trace_lines(name, steps)))

    def open_observations(self, request: str) -> ObservationWriter | None:
        if self.format != "observations":
            return None
        with self._lock:
            name = self._unique(request)
        out, lock = self._out, self._lock

        def write(observation: dict[str, object]) -> None:
            line = json.dumps({"request": name, **observation}, separators=(",", ":"))
            with lock:
                out.write(line + "\n")

        return write
