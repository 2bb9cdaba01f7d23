"""The deployment recorder inside Dynamo's real Worker: SampleLLMEngine driven by the clients of the
differential's scenarios writes traces ``trace`` passes; a planted engine fault is caught at its line;
an ``engine.abort`` line removed from a real recording is named with its request and line.

These need Dynamo's packages (skipped outside CI when absent, failed in CI).  One session serves all
tests: three worker starts (SampleLLMEngine in agg and decode, a faulty engine in agg).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.conformance.drive import RequestShape
from dynamo_backend_protocol.reference.differential.plays import ClientStep
from dynamo_backend_protocol.reference.differential.run import plays_for
from dynamo_backend_protocol.reference.runtime.launcher import RuntimeSession
from dynamo_backend_protocol.reference.runtime.probes import Plan, send
from optional_tools import require_dynamo

SAMPLE = "dynamo.common.backend.sample_engine:SampleLLMEngine"
FAULTY = "broken_dynamo_engines:ChunkAfterTerminal"
HERE = Path(__file__).parent
START_TIMEOUT = 60.0
ITEM_TIMEOUT = 10.0
MAX_TOKENS = 8


@dataclass
class Recorded:
    sample: list[str]
    """The recorder's lines from SampleLLMEngine's workers (agg, then decode)."""
    faulty: list[str]


def _plan(name: str, client: tuple[ClientStep, ...], shape: RequestShape) -> Plan:
    """The scenario's client (its first action) sending SampleLLMEngine a request."""
    request = shape.request(MAX_TOKENS)
    if not client:
        return Plan(name, request)
    step = client[0]
    return Plan(name, request, "leave" if step.op == "disconnect" else "stop", step.after_items)


async def _record(log: Path) -> Recorded:
    sample: list[str] = []
    async with RuntimeSession(SAMPLE, None, log) as session:
        for mode in (Mode.AGGREGATED, Mode.DECODE):
            worker, client = await session.start(mode, START_TIMEOUT, f"--disaggregation-mode {mode.value}")
            shape = RequestShape(mode, "sample-model")
            kept = [  # the teaching scenarios' clients (plain, stop, leave), each run holding its stream
                await send(client, session.core, _plan(f"{mode.value}-{play.name}", play.client, shape),
                           ITEM_TIMEOUT)
                for play in plays_for(mode, 0, 0)
            ]
            await asyncio.sleep(0.3)  # the last engine stream winds down after its client is done
            worker.stop()
            del kept
            sample += worker.request_lines()
        worker, client = await session.start(Mode.AGGREGATED, START_TIMEOUT, "--disaggregation-mode agg", FAULTY)
        run = await send(client, session.core, Plan("faulty-plain", RequestShape(Mode.AGGREGATED).request(4)),
                         ITEM_TIMEOUT)
        await asyncio.sleep(0.3)
        worker.stop()
        del run
        return Recorded(sample, worker.request_lines())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    require_dynamo()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYN_LOG", "error")  # the client runtime here, if this is the first to load it
        patch.chdir(HERE)  # the faulty engine's module is found from here, by the worker too
        return asyncio.run(_record(tmp_path_factory.mktemp("runtime") / "runtime.log"))


def _trace(tmp_path: Path, lines: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    path = tmp_path / "recorded.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    code = main(["trace", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_sample_engine_recorded_under_the_worker_passes_trace(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _trace(tmp_path, recorded.sample, capsys)
    assert code == 0, report
    requests = report["requests"]
    assert isinstance(requests, list)
    names = {entry["request"] for entry in requests}
    assert {"agg-aggregated-cancel", "agg-kill", "agg-cancel-before-setup", "decode-decode-deferred-abort",
            "decode-kill", "decode-silent-drop"} <= names
    assert all(entry["engine_side"] for entry in requests)
    # The scenarios stopped and left requests: aborts were recorded, and judged owed.
    assert sum(json.loads(line)["obs"] == "engine.abort" for line in recorded.sample) >= 2


def test_removing_one_engine_abort_line_fails_trace_naming_that_request_and_line(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parsed = [json.loads(line) for line in recorded.sample]
    removed = next(n for n, line in enumerate(parsed)
                   if line["obs"] == "engine.abort" and line["request"].startswith("agg-"))
    request = parsed[removed]["request"]
    # In agg the abort is owed by the step of the stop or kill the context showed (ABORT-IMMEDIATE).
    owed_at = 1 + next(n for n, line in enumerate(parsed)
                       if line["request"] == request and line["obs"] in ("context.stop", "context.kill"))
    code, report = _trace(tmp_path, recorded.sample[:removed] + recorded.sample[removed + 1 :], capsys)
    assert code == 1
    requests = report["requests"]
    assert isinstance(requests, list)
    (diverged,) = [entry for entry in requests if entry["verdict"] != "conforms"]
    assert diverged["request"] == request
    assert diverged["divergence"]["line"] == owed_at
    assert diverged["divergence"]["observation"] == "engine.abort"


def test_a_planted_engine_fault_is_caught_at_its_line(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """STREAM-TERMINAL-LAST: the faulty engine yields a chunk after its terminal; Dynamo's bridge reads it."""
    parsed = [json.loads(line) for line in recorded.faulty]
    terminal = next(n for n, line in enumerate(parsed) if line["request"] == "faulty-plain"
                    and str(line.get("item", "")).startswith("terminal"))
    extra = 1 + next(n for n, line in enumerate(parsed) if n > terminal and line["request"] == "faulty-plain"
                     and line["obs"] == "engine.item")
    code, report = _trace(tmp_path, recorded.faulty, capsys)
    assert code == 1
    requests = report["requests"]
    assert isinstance(requests, list)
    (faulty,) = [entry for entry in requests if entry["request"] == "faulty-plain"]
    assert faulty["divergence"]["line"] == extra
    assert faulty["divergence"]["rule"] == "STREAM-TERMINAL-LAST"
