"""Dynamo's real adapter, end to end: a worker process per mode and a client in this process.

Everything runs on 127.0.0.1 with file discovery and the TCP planes (no
etcd, NATS or Kubernetes).  :class:`UpstreamSession` owns what it starts: one
temporary folder (model directory, discovery folder, worker logs), the worker
processes, ended by their own process ids, and the client runtime; leaving
the ``async with`` block, however it is left, removes all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.differential.plays import PLANNED_SETUP_ERROR, ClientEnd, Item, Play
from dynamo_backend_protocol.reference.differential.scripted_engine import Record

READY_TIMEOUT = 30.0
"""Seconds a worker may take to start and register."""
ITEM_TIMEOUT = 10.0
"""Seconds the client waits for the next item or for a request to be accepted."""
EXIT_TIMEOUT = 10.0
"""Seconds a worker may take to shut down after SIGTERM before it is killed."""
HOST = "127.0.0.1"

_MODULE = "dynamo_backend_protocol.reference.differential.worker_main"


class UpstreamUnavailable(Exception):
    """Dynamo's packages are missing or its worker cannot start; the message says which."""


def dynamo_installed() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("dynamo._core", "dynamo.common.backend"))
    except ImportError:
        return False


def worker_environment(discovery: Path) -> dict[str, str]:
    """The settings that keep the runtime on this machine and on 127.0.0.1."""
    return {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": str(discovery),
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_RESPONSE_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        "DYN_TCP_RPC_HOST": HOST,
        "DYN_TCP_RESPONSE_STREAM_HOST": HOST,
        "DYN_EVENT_PLANE_HOST": HOST,
        "DYN_SELF_HOST_METADATA": "0",
        "DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "0",
        "HF_HUB_OFFLINE": "1",
        "DYN_LOG": "warn",
    }


def write_model_directory(folder: Path) -> Path:
    """The smallest model directory the worker registers: a word-level tokenizer over five words."""
    folder.mkdir(parents=True)
    vocab = {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "</s>": 4}
    tokenizer: dict[str, object] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }
    files = {
        "tokenizer.json": tokenizer,
        "config.json": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": len(vocab),
                        "max_position_embeddings": 2048, "eos_token_id": 4, "bos_token_id": 0},
        "tokenizer_config.json": {"eos_token": "</s>", "unk_token": "[UNK]", "model_max_length": 2048},
        "generation_config.json": {"eos_token_id": 4},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content), encoding="utf-8")
    return folder


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """The client runtime reads these settings from this process's environment when it is made."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _end_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if this process dies without
    ending it (a SIGKILL leaves no chance to run ``stop``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class UpstreamWorker:
    """One worker process serving one mode; ended by its pid."""

    def __init__(self, root: Path, mode: Mode, model_dir: Path, settings: dict[str, str]) -> None:
        self.mode = mode
        self.namespace = f"differential{mode.value}{os.getpid()}"
        self.log = root / f"worker-{mode.value}.jsonl"
        self.stderr_path = root / f"worker-{mode.value}.stderr"
        self.log.touch()
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", _MODULE, "--mode", mode.value, "--model-dir", str(model_dir),
                 "--namespace", self.namespace, "--log", str(self.log)],
                env={**os.environ, **settings},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_end_with_parent if sys.platform == "linux" else None,
                # Its own session: a terminal's Ctrl-C reaches only this command,
                # which then ends the worker by pid; a worker that died of the same
                # Ctrl-C first would be reported as a failed worker, not an interrupt.
                start_new_session=True,
            )

    @property
    def endpoint(self) -> str:
        return f"{self.namespace}.differential.generate"

    def failure(self) -> str | None:
        """Why the process has already ended, if it has."""
        code = self.process.poll()
        if code is None:
            return None
        lines = [line for line in self.stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else "(no output)"
        return f"the {self.mode.value} worker exited with status {code}: {last}"

    def stop(self) -> None:
        """SIGTERM (the worker's own graceful shutdown runs cleanup), then SIGKILL if it overruns."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(EXIT_TIMEOUT)

    def records(self) -> list[Record]:
        records = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records


class UpstreamSession:
    """The temporary folder, the client runtime and the workers of one ``differential`` run."""

    def __init__(self) -> None:
        if not dynamo_installed():
            raise UpstreamUnavailable(
                "Dynamo's packages are not installed (pip install --no-deps ai-dynamo==1.6.1 "
                "ai-dynamo-runtime==1.6.1 && pip install typing-extensions pydantic uvloop msgspec)"
            )
        self.root = Path(tempfile.mkdtemp(prefix="dbp-differential-"))
        self.model_dir = write_model_directory(self.root / "model")
        self.settings = worker_environment(self.root / "discovery")
        # Dynamo's logging setup leaves a temporary JSON file behind in every
        # process it configures; inside our folder it is removed with the rest.
        (self.root / "tmp").mkdir()
        self.settings["TMPDIR"] = str(self.root / "tmp")
        self.workers: list[UpstreamWorker] = []
        self._core: Any = None
        self._runtime: Any = None

    async def __aenter__(self) -> UpstreamSession:
        with _environment(self.settings):
            self._core = importlib.import_module("dynamo._core")
            self._runtime = self._core.DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End every worker by pid, shut the client runtime down, remove the folder.  Idempotent."""
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self._runtime is not None:
            self._runtime.shutdown()
            self._runtime = None
        shutil.rmtree(self.root, ignore_errors=True)

    async def start(self, mode: Mode) -> UpstreamClient:
        """Start ``mode``'s worker and wait (bounded) until the client sees it."""
        worker = UpstreamWorker(self.root, mode, self.model_dir, self.settings)
        self.workers.append(worker)
        endpoint = self._runtime.endpoint(worker.endpoint)
        client = await endpoint.client()
        waiting = asyncio.ensure_future(client.wait_for_instances())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        try:
            while not waiting.done():
                failed = worker.failure()
                if failed is not None:
                    raise UpstreamUnavailable(failed)
                if loop.time() >= deadline:
                    raise UpstreamUnavailable(f"the {mode.value} worker did not register within {READY_TIMEOUT:.0f}s")
                await asyncio.wait({waiting}, timeout=0.05)
            waiting.result()
        finally:
            waiting.cancel()
        return UpstreamClient(self._core, client, worker)


class UpstreamClient:
    """Plays the client's script against one worker."""

    def __init__(self, core: Any, client: Any, worker: UpstreamWorker) -> None:
        self._core = core
        self._client = client
        self.worker = worker
        self._finished_streams: list[Any] = []
        """Streams that ended are kept until the worker is stopped: dropping one is a kill
        (RUNTIME-DISCONNECT-KILLS), which must not reach a request whose adapter is still
        winding down after its last item."""

    async def play(self, play: Play) -> tuple[tuple[Item, ...], ClientEnd]:
        """The client's side of ``play``; raises :class:`UpstreamUnavailable` if the worker has died."""
        failed = self.worker.failure()
        if failed is not None:
            raise UpstreamUnavailable(failed)
        context = self._core.Context()
        pending = list(play.client)
        request = _request(play.script())
        if pending and pending[0].after_items < 0:
            pending.pop(0)
            context.stop_generating()
        try:
            stream = await asyncio.wait_for(self._client.round_robin(request, context=context), ITEM_TIMEOUT)
        except Exception as error:
            return (), _setup_or_error(error)
        items: list[Item] = []
        end: ClientEnd = "no_terminal"
        while True:
            if pending and pending[0].after_items == len(items):
                step = pending.pop(0)
                if step.op == "disconnect":
                    del stream
                    gc.collect()
                    end = "left"
                    break
                context.stop_generating()
            try:
                annotated = await asyncio.wait_for(stream.__anext__(), ITEM_TIMEOUT)
            except StopAsyncIteration:
                break
            except TimeoutError:
                items.append(Item(error="client timed out waiting for an item"))
                end = "error"
                break
            except Exception as error:
                if not items and PLANNED_SETUP_ERROR in str(error):
                    return (), "setup_error"
                items.append(Item(error=type(error).__name__))
                end = "error"
                break
            data = annotated.data() if callable(getattr(annotated, "data", None)) else annotated.data
            item = Item(tuple(data.get("token_ids") or ()), data.get("finish_reason"))
            items.append(item)
            if item.finish is not None:
                end = "terminal"
        if end != "left":
            self._finished_streams.append(stream)
        await self._barrier(play.name)
        return tuple(items), end

    async def _barrier(self, name: str) -> None:
        stream = await asyncio.wait_for(
            self._client.round_robin(_request({"barrier": name}), context=self._core.Context()), ITEM_TIMEOUT
        )
        with contextlib.suppress(StopAsyncIteration):
            while True:
                await asyncio.wait_for(stream.__anext__(), ITEM_TIMEOUT)


def _request(script: dict[str, Any]) -> dict[str, Any]:
    return {
        "token_ids": [1, 2],
        "stop_conditions": {"max_tokens": 8},
        "sampling_options": {},
        "output_options": {},
        "extra_args": {"differential": script},
    }


def _setup_or_error(error: BaseException) -> ClientEnd:
    return "setup_error" if PLANNED_SETUP_ERROR in str(error) else "error"
