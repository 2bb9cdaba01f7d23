"""``bench --recorder``: what the deployment recorder costs per chunk, off and on.

Off, ``record(engine, None)`` is the engine itself, so it costs nothing by
construction (the figure says whether that still holds).  On, the engine's
stream is read bare and recorded, interleaved round by round: into a sink that
drops each line (the recorder's own work: the context looks, the model's
classification of each item, the line's dict) and into a size-capped file
(JSON encoding and a flushed write per line, in a temporary folder).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.bench.engines import TrivialEngine, YieldingEngine
from dynamo_backend_protocol.reference.bench.rounds import MIN_ROUNDS, Figure, interleaved, per_chunk, ratio
from dynamo_backend_protocol.reference.bench.targets import Target
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.runtime.recorder import RotatingJsonlSink, record

TARGETS = (
    Target("recorder", "off_is_engine", "==", 1.0),
    # A real engine gives the loop a turn per token; recording a line per chunk must stay small beside that.
    Target("recorder", "ratio_yielding_null_sink", "<=", 2.0),
)


async def _drain(engine: Any) -> None:
    async for _ in engine.generate({"token_ids": [1]}, Context()):
        pass


async def recorder_figures(quick: bool, rounds: int = MIN_ROUNDS) -> dict[str, Figure | float | int]:
    chunks = 1_000 if quick else 5_000
    trivial, yielding = TrivialEngine(chunks), YieldingEngine(chunks)
    off = record(trivial, None)
    figures: dict[str, Figure | float | int] = {"chunks_per_request": chunks,
                                                "off_is_engine": 1.0 if off is trivial else 0.0}
    with tempfile.TemporaryDirectory(prefix="dbp-bench-recorder-") as folder:
        sink = RotatingJsonlSink(Path(folder) / "requests.jsonl", max_bytes=8 << 20, backups=1)
        try:
            for name, engine in (("trivial", trivial), ("yielding", yielding)):
                null = record(engine, _drop, Mode.AGGREGATED)
                filed = record(engine, sink, Mode.AGGREGATED)
                samples = await interleaved(
                    {"bare": functools.partial(_drain, engine), "null": functools.partial(_drain, null),
                     "file": functools.partial(_drain, filed)},
                    rounds,
                )
                figures[f"bare_{name}"] = per_chunk(samples["bare"], chunks)
                figures[f"null_sink_{name}"] = per_chunk(samples["null"], chunks)
                figures[f"file_sink_{name}"] = per_chunk(samples["file"], chunks)
                figures[f"ratio_{name}_null_sink"] = ratio(samples["null"], samples["bare"])
                figures[f"ratio_{name}_file_sink"] = ratio(samples["file"], samples["bare"])
        finally:
            sink.close()
    return figures


def _drop(line: dict[str, Any]) -> None:
    return None
