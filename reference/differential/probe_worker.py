"""The child process of ``differential --probe``: Dynamo's Worker serving an engine whose canary answer is fixed.

Run by :mod:`.probe` as ``python -m ...differential.probe_worker``, with the
runtime's health check on (canary after a short idle time) and its system
port on 127.0.0.1.  Each canary request the engine receives is one JSON line
in the log file (whether it carried the ``_HEALTH_CHECK`` marker).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from dynamo_backend_protocol.model.health_probe import CanaryAnswer
from dynamo_backend_protocol.model.releases import Release
from dynamo_backend_protocol.reference.differential.surface import surface

CANARY_MESSAGE = "differential: planned canary failure"


def build_worker(answer: CanaryAnswer, model_dir: str, namespace: str, log: TextIO, release: Release) -> Any:
    engine_api = importlib.import_module("dynamo.common.backend.engine")
    worker_api = importlib.import_module("dynamo.common.backend.worker")
    probes = importlib.import_module("dynamo.common.backend.health_check")

    class CanaryEngine(engine_api.LLMEngine):  # type: ignore[misc,name-defined]
        """Answers every request, the runtime's canary included, the planned way."""

        @classmethod
        async def from_args(cls, argv: list[str] | None = None) -> Any:
            raise NotImplementedError("built by probe_worker, not from a command line")

        async def start(self, worker_id: int) -> Any:
            return engine_api.EngineConfig(model=model_dir, served_model_name=namespace)

        async def health_check_payload(self) -> dict[str, Any]:
            return dict(probes.build_health_check_payload(1))

        async def generate(self, request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
            log.write(json.dumps({"event": "canary", "marked": probes.is_probe(request)}) + "\n")
            log.flush()
            if answer is CanaryAnswer.RAISES:
                raise ValueError(CANARY_MESSAGE)
            yield {"token_ids": [1], "index": 0}
            reason = f"error: {CANARY_MESSAGE}" if answer is CanaryAnswer.ERROR_TERMINAL_CHUNK else "length"
            yield {"token_ids": [], "index": 0, "finish_reason": reason}

        async def cleanup(self) -> None:
            return None

    options: dict[str, Any] = {}
    if surface(release).worker_config_has_kv_routing:
        options["enable_kv_routing"] = False
    config = worker_api.WorkerConfig(
        namespace=namespace, component="probe", endpoint="generate", model_name=model_dir,
        served_model_name=namespace, discovery_backend="file", request_plane="tcp", event_plane="zmq",
        enable_local_indexer=False, **options,
    )
    return worker_api.Worker(CanaryEngine(), config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="differential-probe-worker")
    parser.add_argument("--answer", type=CanaryAnswer, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--release", type=Release.parse, required=True)
    args = parser.parse_args(argv)
    uvloop = importlib.import_module("uvloop")
    with open(args.log, "a", encoding="utf-8") as log:
        uvloop.run(build_worker(args.answer, args.model_dir, args.namespace, log, args.release).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
