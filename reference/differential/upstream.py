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
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.bounded import awaited_within
from dynamo_backend_protocol.reference.differential.dynamo_client import Act, exchange
from dynamo_backend_protocol.reference.differential.plays import PLANNED_SETUP_ERROR, ClientEnd, Item, Play
from dynamo_backend_protocol.reference.differential.scripted_engine import Record
from dynamo_backend_protocol.reference.differential.surface import ReleaseSurface, installed_release, surface

READY_TIMEOUT = 30.0
"""Seconds a worker may take to start and register."""
ITEM_TIMEOUT = 10.0
"""Seconds the client waits for the next item or for a request to be accepted."""
EXIT_TIMEOUT = 10.0
"""Seconds a worker may take to shut down after SIGTERM before it is killed."""
SETTLE_TIMEOUT = 2.0
"""Seconds the client runtime's log lines may keep coming after its shutdown before its log is let go."""
QUIET = 0.2
"""Seconds without a new log line after which the client runtime counts as quiet."""
REGISTRATION_POLL = 0.05
"""Seconds between looks at a starting worker (has it registered, has it died) while it registers."""
HOST = "127.0.0.1"

_MODULE = "dynamo_backend_protocol.reference.differential.worker_main"


class UpstreamUnavailable(ProtocolError):
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
def environment(settings: dict[str, str]) -> Iterator[None]:
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


def end_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if this process dies without
    ending it (a SIGKILL leaves no chance to run ``stop``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)



_PR_SET_PDEATHSIG = 1


def stop_worker(process: subprocess.Popen[bytes], timeout: float = EXIT_TIMEOUT) -> None:
    """End a worker by its pid: SIGTERM (the worker's graceful shutdown runs the engine's cleanup),
    then SIGKILL if it takes more than ``timeout`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(EXIT_TIMEOUT)


class UpstreamWorker:
    """One worker process serving one mode; ended by its pid."""

    def __init__(
        self,
        root: Path,
        mode: Mode,
        model_dir: Path,
        settings: dict[str, str],
        release: ReleaseSurface | None = None,
        raw: bool = False,
    ) -> None:
        self.mode = mode
        self.raw = raw
        self.surface = release if release is not None else surface(installed_release())
        self.name = "raw" if raw else mode.value
        """What the worker serves, in messages and file names: a mode, or the raw adapter."""
        self.namespace = f"differential{self.name}{os.getpid()}"
        self.log = root / f"worker-{self.name}.jsonl"
        self.stderr_path = root / f"worker-{self.name}.stderr"
        self.log.touch()
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", _MODULE, "--mode", mode.value, "--model-dir", str(model_dir),
                 "--namespace", self.namespace, "--log", str(self.log), "--release", str(self.surface.release),
                 *(["--raw"] if raw else [])],
                env={**os.environ, **settings},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=end_with_parent if sys.platform == "linux" else None,
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
        return f"the {self.name} worker exited with status {code}: {last}"

    def stop(self) -> None:
        stop_worker(self.process)

    def output(self) -> str:
        """Everything the worker process wrote to its stderr (the runtime's log lines)."""
        return self.stderr_path.read_text(errors="replace")

    def records(self) -> list[Record]:
        records = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records


class UpstreamSession:
    """The temporary folder, the client runtime and the workers of one ``differential`` run.

    ``runtime_log``: where the runtime's own log lines go, the client runtime's (in this
    process) and each worker's; None leaves them on this process's stderr.
    """

    def __init__(self, release: ReleaseSurface | None = None, runtime_log: Path | None = None) -> None:
        if not dynamo_installed():
            raise UpstreamUnavailable(
                "Dynamo's packages are not installed (pip install --no-deps ai-dynamo==1.6.1 "
                "ai-dynamo-runtime==1.6.1 && pip install typing-extensions pydantic uvloop msgspec)"
            )
        self.surface = release if release is not None else surface(installed_release())
        self.runtime_log = runtime_log
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
        self._stderr: _StderrRedirect | None = None

    async def __aenter__(self) -> UpstreamSession:
        if self.runtime_log is not None:
            self._stderr = _StderrRedirect(self.runtime_log)
        with environment(self.settings):
            self._core = importlib.import_module("dynamo._core")
            self._runtime = self._core.DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End every worker by pid, shut the client runtime down, keep the runtime's log lines
        (when a log was asked for), remove the folder.  Idempotent."""
        for worker in self.workers:
            worker.stop()
        if self._runtime is not None:
            self._runtime.shutdown()
            self._runtime = None
        if self._stderr is not None:
            self._stderr.restore_when_quiet()
            self._stderr = None
        if self.runtime_log is not None:
            with open(self.runtime_log, "a", encoding="utf-8") as log:
                for worker in self.workers:
                    log.write(f"--- the {worker.name} worker's output ---\n{worker.output()}")
        self.workers.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    async def start(self, mode: Mode, raw: bool = False) -> UpstreamClient:
        """Start ``mode``'s worker (``raw``: serving a RawEngine) and wait (bounded) until the client sees it."""
        worker = UpstreamWorker(self.root, mode, self.model_dir, self.settings, self.surface, raw)
        self.workers.append(worker)
        endpoint = self._runtime.endpoint(worker.endpoint)
        listed = await _client_with_instance(endpoint, worker)
        client = UpstreamClient(self._core, endpoint, listed, worker, self.surface)
        await client.warm_up()
        return client


async def _client_with_instance(endpoint: Any, worker: UpstreamWorker) -> Any:
    """A client of ``endpoint`` once it sees ``worker``'s instance (bounded; the worker's death is reported)."""
    client = await endpoint.client()
    if not await wait_for_registration(client, READY_TIMEOUT, lambda: worker.process.poll() is not None):
        raise UpstreamUnavailable(
            worker.failure() or f"the {worker.name} worker did not register within {READY_TIMEOUT:.0f}s")
    return client


async def wait_for_registration(client: Any, seconds: float, exited: Callable[[], bool]) -> bool:
    """Wait, at most ``seconds``, until ``client`` (a client of a worker's endpoint) sees an instance of it:
    True once it does, False when the worker's process ended first or the time ran out (the caller, which
    knows the worker, says which and why).  Dynamo's own wait has no bound and does not notice a worker that
    died, so it runs as a task polled every 50 ms, and ``exited`` is asked each time.  Shared by
    ``differential`` and ``conform --runtime dynamo``."""
    waiting = asyncio.ensure_future(client.wait_for_instances())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while not waiting.done():
            if exited() or loop.time() >= deadline:
                return False
            await asyncio.wait({waiting}, timeout=REGISTRATION_POLL)
        waiting.result()
    finally:
        waiting.cancel()
    return True


class _StderrRedirect:
    """This process's file descriptor 2 appended to a file until :meth:`restore`: the client
    runtime's Rust code logs there directly, past Python's ``sys.stderr``."""

    def __init__(self, path: Path) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(target, 2)
        finally:
            os.close(target)

    def restore_when_quiet(self) -> None:
        """Restore fd 2 once the file has had no new line for :data:`QUIET` seconds (at most
        :data:`SETTLE_TIMEOUT`): the runtime's shutdown logs from its own threads after
        ``shutdown()`` has returned."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        size = -1
        while time.monotonic() < deadline:
            now = os.fstat(2).st_size
            if now == size:
                break
            size = now
            time.sleep(QUIET)
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)


class UpstreamClient:
    """Plays the client's script against one worker."""

    def __init__(self, core: Any, endpoint: Any, client: Any, worker: UpstreamWorker, release: ReleaseSurface) -> None:
        self._core = core
        self._endpoint = endpoint
        self._client = client
        self.worker = worker
        self.surface = release
        self._finished_streams: list[Any] = []
        """Streams that ended are kept until the worker is stopped: dropping one is a kill
        (RUNTIME-DISCONNECT-KILLS), which must not reach a request whose adapter is still
        winding down after its last item."""

    async def play(self, play: Play) -> tuple[tuple[Item, ...], ClientEnd]:
        """The client's side of ``play``; raises :class:`UpstreamUnavailable` if the worker has died."""
        failed = self.worker.failure()
        if failed is not None:
            raise UpstreamUnavailable(failed)
        acts: list[tuple[int, Act]] = [(step.after_items, "leave" if step.op == "disconnect" else "stop")
                                       for step in play.client]
        seen = await exchange(self._client, self._core.Context(), self._request(play.script()), acts, ITEM_TIMEOUT)
        items = [Item(tuple(data.get("token_ids") or ()), data.get("finish_reason")) for data in seen.data]
        if seen.ended in ("not_sent", "failed") and not items and PLANNED_SETUP_ERROR in str(seen.error):
            await self._after_setup_error("setup_error")
            await self._barrier(play.name)
            return (), "setup_error"
        if seen.ended == "not_sent":
            return (), "error"
        end: ClientEnd = "terminal" if any(item.finish is not None for item in items) else "no_terminal"
        if seen.ended == "left":
            end = "left"
        elif seen.ended == "timed_out":
            items.append(Item(error="client timed out waiting for an item"))
            end = "error"
        elif seen.ended == "failed":
            items.append(Item(error=type(seen.error).__name__))
            end = "error"
        if seen.stream is not None:
            self._finished_streams.append(seen.stream)
        await self._barrier(play.name)
        return tuple(items), end

    async def warm_up(self) -> None:
        """Until one request has gone through (bounded): an instance can be listed before its
        request plane accepts, and the first play must not be the one that finds out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while True:
            failed = self.worker.failure()
            if failed is not None:
                raise UpstreamUnavailable(failed)
            try:
                await self._barrier("warm-up")
                return
            except Exception as error:
                if loop.time() >= deadline:
                    raise UpstreamUnavailable(
                        f"the {self.worker.name} worker registered but did not answer within "
                        f"{READY_TIMEOUT:.0f}s: {error}"
                    ) from None
                await asyncio.sleep(0.1)

    async def _after_setup_error(self, end: ClientEnd) -> None:
        """Up to 1.5.1 the client drops its only instance after a setup error
        (SETUP_ERROR_DROPS_WORKER): a new client that waits for the worker again."""
        if end == "setup_error" and self.surface.setup_error_drops_worker:
            self._client = await _client_with_instance(self._endpoint, self.worker)

    def _request(self, script: dict[str, Any]) -> dict[str, Any]:
        return {**_request(script), **self.surface.request_fields(self.worker.namespace)}

    async def _barrier(self, name: str) -> None:
        stream = await awaited_within(
            self._client.round_robin(self._request({"barrier": name}), context=self._core.Context()), ITEM_TIMEOUT
        )
        with contextlib.suppress(StopAsyncIteration):
            while True:
                await awaited_within(stream.__anext__(), ITEM_TIMEOUT)


def _request(script: dict[str, Any]) -> dict[str, Any]:
    return {
        "token_ids": [1, 2],
        "stop_conditions": {"max_tokens": 8},
        "sampling_options": {},
        "output_options": {},
        "extra_args": {"differential": script},
    }
