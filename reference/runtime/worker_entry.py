"""The child process: a user's engine, built as Dynamo builds it, served by Dynamo's real Worker, recorded.

Run by :mod:`.launcher` as ``python -m ...runtime.worker_entry``; it needs
Dynamo's packages and the loopback environment of
:func:`differential.upstream.worker_environment`.  The engine is built the way
``conform`` builds it (``from_args(argv)`` with ``--engine-args`` for a class
that has it, else the class or zero-argument factory), wrapped by the
deployment recorder (:func:`.recorder.record`) into the request log, and
served under Dynamo's ``Worker`` with the worker configuration the engine's
``from_args`` gave, moved onto this machine: file discovery, the TCP planes,
a namespace of our own, the small model directory the launcher wrote, and no
KV-event publishers.

What the Worker's lifecycle calls did (start, its config's model, cleanup) go
to a second JSON Lines file, the lifecycle log, since they belong to no request.
Everything Dynamo logs goes to this process's stderr, which the launcher
sends to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.conformance.construction import engine_factory
from dynamo_backend_protocol.reference.conformance.session import describe_error, make_engine
from dynamo_backend_protocol.reference.conformance.target import load_engine_factory
from dynamo_backend_protocol.reference.runtime.recorder import RotatingJsonlSink, record

COMPONENT = "conform"
ENDPOINT = "generate"
_DYNAMO_MODES = {Mode.AGGREGATED: "AGGREGATED", Mode.PREFILL: "PREFILL", Mode.DECODE: "DECODE",
                 Mode.ENCODE: "ENCODE"}


class Lifecycle:
    """One JSON line per lifecycle call and its outcome, flushed at once (the process may be ended)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def __call__(self, event: str, **fields: object) -> None:
        self._out.write(json.dumps({"event": event, "t": round(time.time(), 6), **fields}) + "\n")
        self._out.flush()


def _model_of(config: object) -> object:
    return config.get("model") if isinstance(config, Mapping) else getattr(config, "model", None)


def hosted_engine(engine: Any, lifecycle: Lifecycle, model_dir: str, namespace: str) -> Any:
    """The engine under Dynamo's engine base class: start and cleanup are logged; start's config is
    handed to the Worker as Dynamo's ``EngineConfig`` naming our model directory, since the Worker
    registers a model it can load here (the engine's own answer is what the lifecycle log keeps)."""
    engine_api = importlib.import_module("dynamo.common.backend.engine")

    class HostedEngine(engine_api.LLMEngine):  # type: ignore[misc,name-defined]
        @classmethod
        async def from_args(cls, argv: list[str] | None = None) -> Any:
            raise NotImplementedError("built by worker_entry")

        async def start(self, worker_id: int) -> Any:
            lifecycle("start")
            try:
                config = await engine.start(worker_id)
            except BaseException as exc:
                lifecycle("start_raised", error=describe_error(exc))
                raise
            model = _model_of(config)
            lifecycle("started", model=model if isinstance(model, str) else repr(model))
            llm = getattr(config, "llm", None)
            return engine_api.EngineConfig(model=model_dir, served_model_name=namespace, llm=llm)

        def generate(self, request: Any, context: Any) -> Any:
            return engine.generate(request, context)

        async def abort(self, context: Any) -> None:
            await engine.abort(context)

        async def cleanup(self) -> None:
            lifecycle("cleanup")
            try:
                await engine.cleanup()
            except BaseException as exc:
                lifecycle("cleanup_raised", error=describe_error(exc))
                raise
            lifecycle("cleaned_up")

        async def is_quiescent(self) -> bool:
            # Nothing of the kit's requests outlives them: a prefill worker need not wait out a drain budget.
            return True

    return HostedEngine()


def worker_config(built: object, mode: Mode, model_dir: str, namespace: str) -> Any:
    """The engine's own worker configuration (from ``from_args``), moved onto this machine; or a fresh one."""
    worker_api = importlib.import_module("dynamo.common.backend.worker")
    constants = importlib.import_module("dynamo.common.constants")
    here = {
        "namespace": namespace, "component": COMPONENT, "endpoint": ENDPOINT, "model_name": model_dir,
        "served_model_name": namespace, "discovery_backend": "file", "request_plane": "tcp",
        "response_plane": "tcp", "event_plane": "zmq", "enable_local_indexer": False, "enable_kv_routing": False,
        "disaggregation_mode": getattr(constants.DisaggregationMode, _DYNAMO_MODES[mode]),
        "health_check_payload": None, "route_to_encoder": False,
    }
    if isinstance(built, worker_api.WorkerConfig):
        return dataclasses.replace(built, **here)
    return worker_api.WorkerConfig(**here)


async def serve(args: argparse.Namespace, lifecycle: Lifecycle) -> None:
    worker_api = importlib.import_module("dynamo.common.backend.worker")
    mode = Mode.parse(args.mode)
    factory = engine_factory(load_engine_factory(args.engine), args.engine_args, args.engine)
    try:
        engine = await make_engine(factory, args.engine)
    except Exception as exc:
        lifecycle("build_failed", error=str(exc))
        raise
    # The stand-in context records side-channel first-token notices, so DECODE-DEFER can be judged.
    recorded = record(engine, RotatingJsonlSink(Path(args.record_path)), mode, observe_notices=True)
    config = worker_config(getattr(factory, "worker_config", None), mode, args.model_dir, args.namespace)
    hosted = hosted_engine(recorded, lifecycle, args.model_dir, args.namespace)
    await worker_api.Worker(hosted, config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime-worker")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--engine-args", default=None)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--record", dest="record_path", required=True)
    parser.add_argument("--lifecycle", required=True)
    args = parser.parse_args(argv)
    uvloop = importlib.import_module("uvloop")
    with open(args.lifecycle, "a", encoding="utf-8") as out:
        uvloop.run(serve(args, Lifecycle(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
