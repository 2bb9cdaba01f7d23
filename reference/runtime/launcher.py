"""Dynamo's real Worker serving a user's engine, in a child process per mode, and a client here.

Everything runs on 127.0.0.1 with file discovery and the TCP planes, as in
``differential`` (whose loopback environment and model directory this reuses).
:class:`RuntimeSession` owns what it starts: a temporary folder (model
directory, discovery folder, request and lifecycle logs), the worker processes,
each ended by its own process id (SIGTERM, whose graceful shutdown runs the
engine's cleanup, then SIGKILL if it overruns), and the client runtime.
Leaving the ``async with`` block, however it is left (a failure, Ctrl-C),
ends all of them and removes the folder.

Quiet: the runtime's own logs (the worker processes' and the client
runtime's, which writes to this process's file descriptors 1 and 2 from
compiled code) go to one log file that outlives the run, unless ``verbose``.
The runtime in this process also logs at interpreter exit, after the
descriptors are given back; :func:`quiet_client_runtime` keeps that to errors
and must run before anything imports ``dynamo._core`` (Dynamo's engine
modules do), since the runtime reads ``DYN_LOG`` once, when it loads.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.differential.upstream import (
    UpstreamUnavailable,
    dynamo_installed,
    end_with_parent,
    environment,
    stop_worker,
    wait_for_registration,
    worker_environment,
    write_model_directory,
)
from dynamo_backend_protocol.reference.runtime.engine_side import EngineRequest, by_request
from dynamo_backend_protocol.reference.runtime.worker_entry import COMPONENT, ENDPOINT

EXIT_TIMEOUT = 10.0
"""Seconds a worker may take to shut down (its cleanup included) after SIGTERM before it is killed."""
_MODULE = "dynamo_backend_protocol.reference.runtime.worker_entry"


class RuntimeUnavailable(UpstreamUnavailable):
    """Dynamo's packages are missing, or a worker could not start or register; the message says which."""


def quiet_client_runtime() -> None:
    """Only errors from the runtime loaded in this process (the workers log at info level to the log file)."""
    os.environ["DYN_LOG"] = "error"


def default_log_path() -> Path:
    """Where the runtime's logs go when the user names no file: kept after the run, in the temp folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"dbp-runtime-{stamp}-{os.getpid()}.log"


class RuntimeWorker:
    """One worker process serving the user's engine in one mode; ended by its pid."""

    def __init__(self, session: RuntimeSession, mode: Mode, engine: str, engine_args: str | None) -> None:
        self.mode = mode
        number = len(session.workers) + 1
        self.namespace = f"dbpruntime{mode.value}{os.getpid()}n{number}"
        root = session.root
        self.requests_path = root / f"requests-{number}-{mode.value}.jsonl"
        self.lifecycle_path = root / f"lifecycle-{number}-{mode.value}.jsonl"
        command = [sys.executable, "-m", _MODULE, "--engine", engine, "--mode", mode.value,
                   "--model-dir", str(session.model_dir), "--namespace", self.namespace,
                   "--record", str(self.requests_path), "--lifecycle", str(self.lifecycle_path)]
        if engine_args is not None:
            command += ["--engine-args", engine_args]
        # Shown (--verbose) on standard error, never on standard output, which is the report's (--json).
        output: Any = sys.stderr.fileno() if session.verbose else session.log
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **session.settings},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            preexec_fn=end_with_parent if sys.platform == "linux" else None,
            # Its own session: a terminal's Ctrl-C reaches only this command, which ends it by pid.
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    @property
    def endpoint(self) -> str:
        return f"{self.namespace}.{COMPONENT}.{ENDPOINT}"

    def exit_status(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = EXIT_TIMEOUT) -> None:
        stop_worker(self.process, timeout)

    def request_lines(self) -> list[str]:
        return _lines(self.requests_path)

    async def settled(self, names: Sequence[str], seconds: float,
                      shown: Callable[[EngineRequest], bool] = EngineRequest.ended) -> None:
        """Wait, at most ``seconds``, until the engine's side of every request in ``names`` shows what is
        judged of it (by default, that its stream ended): the client's side of a request ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and self.exit_status() is None:
            seen = by_request(self.request_lines())
            if all(name in seen and shown(seen[name]) for name in names):
                return
            await asyncio.sleep(0.02)

    def lifecycle(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in _lines(self.lifecycle_path)]


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


class _Descriptors:
    """File descriptors 1 and 2 sent to the log file while the client runtime lives (its compiled
    logging writes there directly), and given back afterwards."""

    def __init__(self, log: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [(fd, os.dup(fd)) for fd in (1, 2)]
        for fd, _ in self._saved:
            os.dup2(log.fileno(), fd)

    def restore(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []


class RuntimeSession:
    """The temporary folder, the client runtime, the log file and the workers of one run."""

    def __init__(self, engine: str, engine_args: str | None, log_path: Path, verbose: bool = False) -> None:
        if not dynamo_installed():
            raise RuntimeUnavailable(
                "Dynamo's packages are not installed (pip install --no-deps ai-dynamo==1.6.1 "
                "ai-dynamo-runtime==1.6.1 && pip install typing-extensions pydantic uvloop msgspec)"
            )
        self.engine = engine
        self.engine_args = engine_args
        self.verbose = verbose
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed by close()
        self.root = Path(tempfile.mkdtemp(prefix="dbp-runtime-"))
        self.model_dir = write_model_directory(self.root / "model")
        self.settings = worker_environment(self.root / "discovery")
        # Dynamo's logging setup leaves a temporary file behind in each process: inside our folder it goes too.
        (self.root / "tmp").mkdir()
        self.settings["TMPDIR"] = str(self.root / "tmp")
        self.settings["DYN_LOG"] = "info"
        self.workers: list[RuntimeWorker] = []
        self.core: Any = None
        self._runtime: Any = None
        self._descriptors: _Descriptors | None = None

    async def __aenter__(self) -> RuntimeSession:
        try:
            if not self.verbose:
                self._descriptors = _Descriptors(self.log)
            # Not the workers' log level: the runtime here reads DYN_LOG when it loads (quiet_client_runtime).
            client_settings = {name: value for name, value in self.settings.items() if name != "DYN_LOG"}
            with environment(client_settings):
                self.core = importlib.import_module("dynamo._core")
                self._runtime = self.core.DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End every worker by pid, shut the client runtime down, give back stdout and stderr, remove
        the folder.  Idempotent; a second Ctrl-C meanwhile still gives the terminal back (a worker it
        leaves running gets SIGTERM from Linux when this process ends)."""
        try:
            for worker in self.workers:
                worker.stop()
            if self._runtime is not None:
                runtime, self._runtime = self._runtime, None
                runtime.shutdown()
        finally:
            if self._descriptors is not None:
                self._descriptors.restore()
                self._descriptors = None
            if not self.log.closed:
                self.log.close()
            shutil.rmtree(self.root, ignore_errors=True)

    async def start(
        self, mode: Mode, start_timeout: float, engine_args: str | None = None, engine: str | None = None
    ) -> tuple[RuntimeWorker, Any]:
        """Start ``mode``'s worker (serving ``engine`` built with ``engine_args``, by default the session's)
        and wait, at most ``start_timeout`` seconds, until the client sees it.

        Returns the worker and a client of its endpoint; raises :class:`RuntimeUnavailable` if the
        worker exits or does not register in time (the lifecycle log then says why, if it can).
        """
        arguments = self.engine_args if engine_args is None else engine_args
        worker = RuntimeWorker(self, mode, engine or self.engine, arguments)
        self.workers.append(worker)
        client = await self._runtime.endpoint(worker.endpoint).client()
        if not await wait_for_registration(client, start_timeout, lambda: worker.exit_status() is not None):
            status = worker.exit_status()
            if status is not None:
                raise RuntimeUnavailable(f"the {mode.value} worker exited with status {status} before it "
                                         f"served: {self._why(worker)}")
            raise RuntimeUnavailable(f"the {mode.value} worker did not register within "
                                     f"{start_timeout:g} s (--start-timeout): {self._why(worker)}")
        return worker, client

    def _why(self, worker: RuntimeWorker) -> str:
        events = worker.lifecycle()
        for record in reversed(events):
            if record.get("error"):
                return f"{record['event']}: {record['error']}"
        if events and events[-1].get("event") == "start":
            return "start() had not returned"
        return f"see the runtime log {self.log_path}"
