"""The child process: Dynamo's real ``Worker`` serving the scripted engine.

Run by :mod:`.upstream` as ``python -m ...differential.worker_main``; it
needs Dynamo's packages and the environment :func:`.upstream.worker_environment`
sets (file discovery, TCP planes, all on 127.0.0.1).  Each observation is one
JSON line in the log file, flushed at once, so nothing is lost if the
process is ended.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, TextIO

from dynamo_backend_protocol.model.releases import Release
from dynamo_backend_protocol.reference.differential.scripted_engine import Record, ScriptedEngine
from dynamo_backend_protocol.reference.differential.surface import surface

_MODES = {"agg": "AGGREGATED", "prefill": "PREFILL", "decode": "DECODE", "encode": "ENCODE"}


def _line_sink(log: TextIO) -> Any:
    def sink(record: Record) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    return sink


def build_worker(mode: str, model_dir: str, namespace: str, log: TextIO, release: Release, raw: bool = False) -> Any:
    core = importlib.import_module("dynamo._core")
    engine_api = importlib.import_module("dynamo.common.backend.engine")
    worker_api = importlib.import_module("dynamo.common.backend.worker")
    constants = importlib.import_module("dynamo.common.constants")
    scripted = ScriptedEngine(model_dir, _line_sink(log), core.InvalidArgument, mode)

    # A RawEngine is served by the raw adapter (JSON objects in and out, from 1.3.1).
    base = engine_api.RawEngine if raw else engine_api.LLMEngine

    class UpstreamScriptedEngine(base):  # type: ignore[misc,valid-type]
        """Dynamo's engine base class over the scripted engine."""

        @classmethod
        async def from_args(cls, argv: list[str] | None = None) -> Any:
            raise NotImplementedError("built by worker_main, not from a command line")

        async def start(self, worker_id: int) -> Any:
            scripted.sink({"play": None, "event": "start"})
            return engine_api.EngineConfig(model=model_dir, served_model_name=namespace)

        def generate(self, request: Any, context: Any) -> Any:
            return scripted.generate(request, context)

        async def abort(self, context: Any) -> None:
            await scripted.abort(context)

        async def cleanup(self) -> None:
            await scripted.cleanup()

        async def is_quiescent(self) -> bool:
            # No KV transfers ever: a prefill worker need not wait out its drain budget.
            return True

    release_options: dict[str, Any] = {}
    if surface(release).worker_config_has_kv_routing:
        release_options["enable_kv_routing"] = False
    if raw:
        # The raw pipeline has no tokenizer stage: the request is forwarded as text-shaped JSON.
        release_options["model_input"] = importlib.import_module("dynamo.llm").ModelInput.Text
        release_options["endpoint_types"] = "images"
    config = worker_api.WorkerConfig(
        namespace=namespace,
        component="differential",
        endpoint="generate",
        model_name=model_dir,
        served_model_name=namespace,
        discovery_backend="file",
        request_plane="tcp",
        event_plane="zmq",
        enable_local_indexer=False,
        disaggregation_mode=getattr(constants.DisaggregationMode, _MODES[mode]),
        **release_options,
    )
    return worker_api.Worker(UpstreamScriptedEngine(), config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="differential-worker")
    parser.add_argument("--mode", choices=sorted(_MODES), required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--release", type=Release.parse, required=True)
    parser.add_argument("--raw", action="store_true", help="serve the scripted engine as a RawEngine")
    args = parser.parse_args(argv)
    uvloop = importlib.import_module("uvloop")
    with open(args.log, "a", encoding="utf-8") as log:
        worker = build_worker(args.mode, args.model_dir, args.namespace, log, args.release, args.raw)
        uvloop.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
