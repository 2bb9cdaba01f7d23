"""The trace validator's speed and memory on a large generated trace.

The file holds a seeded mix of requests in agg and decode (a failed setup,
completions of several lengths, stops, drops), each written as the adapter's
trace writer writes a finished request, so every request conforms.  Three
child processes read the same file, one after the other: ``json.loads`` over
its lines (the yardstick), ``dynamo-backend-protocol trace FILE`` and the same
with ``--json``; each one's wall time, CPU time and its own peak RSS are
measured.  Lines per second are by wall time; the speed against ``json.loads``
is the ratio of CPU times, which load from elsewhere does not move.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dynamo_backend_protocol.model import (
    Event,
    EventKind,
    FinishReason,
    Mode,
    RequestMachine,
    event,
)
from dynamo_backend_protocol.reference.bench.memory import MIB, ChildRun, run_python
from dynamo_backend_protocol.reference.bench.targets import Figures, Target
from dynamo_backend_protocol.reference.traces.writer import trace_lines

TARGETS = (
    Target("trace", "text_exit_code", "==", 0),
    Target("trace", "json_exit_code", "==", 0),
    Target("trace", "text_speed_vs_json_loads", ">=", 1 / 3),
    Target("trace", "json_speed_vs_json_loads", ">=", 1 / 3),
    Target("trace", "text_peak_rss_mib", "<", 100),
    Target("trace", "json_peak_rss_mib", "<", 100),
)
CHILD_TIMEOUT = 900.0

_SETUP = event(EventKind.SETUP)
_TOKEN = event(EventKind.TOKEN_CHUNK)
SHAPES: tuple[tuple[Event, ...], ...] = (
    (event(EventKind.SETUP_FAILED),),
    (_SETUP, event(EventKind.TERMINAL, FinishReason.STOP, True)),
    (_SETUP, _TOKEN, event(EventKind.TERMINAL, FinishReason.LENGTH, True)),
    (_SETUP, _TOKEN, _TOKEN, _TOKEN, event(EventKind.TERMINAL, FinishReason.STOP)),
    (_SETUP, _TOKEN, event(EventKind.STOP), event(EventKind.TERMINAL, FinishReason.CANCELLED)),
    (_SETUP, _TOKEN, event(EventKind.DROP)),
)
_PLACEHOLDER = "\x00request\x00"

_JSON_LOADS = "import json, sys\nfor line in open(sys.argv[1], 'rb'):\n    json.loads(line)\n"


def _templates() -> list[list[str]]:
    """Each shape's trace lines in each mode, as the model records them, with a placeholder id."""
    templates = []
    for mode in (Mode.AGGREGATED, Mode.DECODE):
        for shape in SHAPES:
            machine = RequestMachine(mode)
            for ev in shape:
                machine.fire(ev)
            templates.append(trace_lines(_PLACEHOLDER, machine.history))
    return templates


def trace_file_lines(requests: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    templates = _templates()
    placeholder = json.dumps(_PLACEHOLDER)
    for number in range(requests):
        name = json.dumps(f"req-{number}")
        for line in rng.choice(templates):
            yield line.replace(placeholder, name, 1)


def write_trace_file(path: Path, requests: int, seed: int) -> int:
    """Write the trace; returns its number of lines."""
    lines = 0
    with path.open("w", encoding="utf-8") as out:
        for line in trace_file_lines(requests, seed):
            out.write(line + "\n")
            lines += 1
    return lines


def trace_figures(requests: int, seed: int = 20261201) -> Figures:
    with tempfile.TemporaryDirectory(prefix="dbp-bench-") as folder:
        path = Path(folder) / "trace.jsonl"
        lines = write_trace_file(path, requests, seed)
        runs: dict[str, ChildRun] = {
            "json_loads": run_python("-c", _JSON_LOADS, [str(path)], CHILD_TIMEOUT),
            "text": run_python("-m", "dynamo_backend_protocol", ["trace", str(path)], CHILD_TIMEOUT),
            "json": run_python("-m", "dynamo_backend_protocol", ["trace", "--json", str(path)], CHILD_TIMEOUT),
        }
        size = path.stat().st_size
    figures: dict[str, float | int | str] = {"requests": requests, "lines": lines, "file_mib": round(size / MIB, 1)}
    baseline = runs["json_loads"].cpu_seconds
    for name, run in runs.items():
        figures[f"{name}_lines_per_s"] = round(lines / run.seconds)
        figures[f"{name}_cpu_seconds"] = round(run.cpu_seconds, 3)
        figures[f"{name}_peak_rss_mib"] = round(run.peak_rss_bytes / MIB, 1)
        if name != "json_loads":
            figures[f"{name}_exit_code"] = run.exit_code
            if run.exit_code != 0:
                figures[f"{name}_last_error"] = run.last_error_line
            # Speed by CPU time, as the adapter's figures: the machine's load does not move it.
            figures[f"{name}_speed_vs_json_loads"] = round(baseline / run.cpu_seconds, 3)
    return figures
