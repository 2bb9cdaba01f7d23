"""``differential --probe``: the health-check canary through Dynamo's worker, held to the model.

For each way an engine can answer a canary request (``model/health_probe.py``)
a worker is started with the runtime's health check on (a canary after one
idle second) and its system port on 127.0.0.1; once the engine has received
two canary requests (so the first was judged), ``/health`` says whether the
endpoint is ready, and that is compared with what the model says.  Every
wait is bounded; each worker is ended by its pid; the folder is removed and
the workers' output appended to the runtime log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dynamo_backend_protocol.model.health_probe import CANARY_HEALTH, CanaryAnswer, EndpointHealth
from dynamo_backend_protocol.model.releases import HEALTH_PROBE_RELEASE
from dynamo_backend_protocol.reference.differential.surface import ReleaseSurface, installed_release, surface
from dynamo_backend_protocol.reference.differential.upstream import (
    HOST,
    UpstreamUnavailable,
    dynamo_installed,
    end_with_parent,
    stop_worker,
    worker_environment,
    write_model_directory,
)

CANARIES_TIMEOUT = 20.0
"""Seconds a worker may take to start and receive its first two canary requests."""
_MODULE = "dynamo_backend_protocol.reference.differential.probe_worker"
_PORTS = (20000, 32000)
"""The runtime reads its system port as a 16-bit signed number: stay below 32768."""


@dataclass(frozen=True)
class ProbeVerdict:
    answer: CanaryAnswer
    expected: EndpointHealth
    seen: EndpointHealth | None
    canaries: int
    marked: bool
    """Every canary the engine received carried the ``_HEALTH_CHECK`` marker."""
    problem: str | None = None

    @property
    def agreed(self) -> bool:
        return self.problem is None and self.seen is self.expected and self.marked

    def line(self) -> str:
        what = "agree" if self.agreed else "DIVERGE"
        seen = self.problem or f"endpoint {self.seen}"
        return (f"probe   {self.answer.value:<34} {what}: model says {self.expected}, Dynamo's worker: {seen} "
                f"({self.canaries} canary request(s), marked={self.marked})")

    def as_json(self) -> dict[str, object]:
        return {"answer": self.answer.value, "model": self.expected.value,
                "dynamo": None if self.seen is None else self.seen.value, "canaries": self.canaries,
                "marked": self.marked, "problem": self.problem, "verdict": "agree" if self.agreed else "diverge"}


@dataclass
class ProbeReport:
    verdicts: list[ProbeVerdict] = field(default_factory=list)
    not_in_release: str | None = None
    seconds: float = 0.0

    @property
    def diverged(self) -> int:
        return sum(not verdict.agreed for verdict in self.verdicts)

    def line(self) -> str:
        if self.not_in_release is not None:
            return f"probe: {self.not_in_release}"
        return (f"probe: {len(self.verdicts)} canary answers, {len(self.verdicts) - self.diverged} agreed, "
                f"{self.diverged} diverged, {self.seconds:.1f}s")

    def as_json(self) -> dict[str, object]:
        return {"mode": "probe", "not_in_release": self.not_in_release, "seconds": round(self.seconds, 3),
                "diverged": self.diverged, "verdicts": [verdict.as_json() for verdict in self.verdicts]}


def _free_port() -> int:
    for _ in range(200):
        port = random.randint(*_PORTS)
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind((HOST, port))
            return port
    raise UpstreamUnavailable(f"no free port between {_PORTS[0]} and {_PORTS[1]} on {HOST}")


def _health(port: int) -> EndpointHealth | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2.0) as answer:
            status = json.loads(answer.read())["status"]
    except urllib.error.HTTPError as refused:
        status = json.loads(refused.read() or b"{}").get("status")
    except (OSError, ValueError, KeyError):
        return None
    return EndpointHealth.READY if status == "ready" else EndpointHealth.NOT_READY


async def _play(answer: CanaryAnswer, root: Path, release: ReleaseSurface, runtime_log: Path | None) -> ProbeVerdict:
    folder = root / answer.value
    model_dir = write_model_directory(folder / "model")
    port = _free_port()
    settings = {
        **worker_environment(folder / "discovery"),
        "DYN_HEALTH_CHECK_ENABLED": "true", "DYN_CANARY_WAIT_TIME": "1", "DYN_SYSTEM_ENABLED": "true",
        "DYN_SYSTEM_HOST": HOST, "DYN_SYSTEM_PORT": str(port), "TMPDIR": str(root),
    }
    log, output = folder / "canaries.jsonl", folder / "worker.stderr"
    log.touch()
    with open(output, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", _MODULE, "--answer", answer.value, "--model-dir", str(model_dir),
             "--namespace", f"probe{answer.value.replace('_', '')}{os.getpid()}", "--log", str(log),
             "--release", str(release.release)],
            env={**os.environ, **settings}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=end_with_parent if sys.platform == "linux" else None, start_new_session=True,
        )
    expected = CANARY_HEALTH[answer]
    try:
        deadline = time.monotonic() + CANARIES_TIMEOUT
        records: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(records) < 2 and process.poll() is None:
            await asyncio.sleep(0.2)
            records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        problem = None
        if process.poll() is not None:
            problem = f"the probe worker exited with status {process.returncode}"
        elif len(records) < 2:
            problem = f"fewer than two canary requests within {CANARIES_TIMEOUT:.0f}s"
        seen = None if problem else await asyncio.to_thread(_health, port)
        if problem is None and seen is None:
            problem = f"/health on {HOST}:{port} did not answer"
        marked = bool(records) and all(record.get("marked") is True for record in records)
        return ProbeVerdict(answer, expected, seen, len(records), marked, problem)
    finally:
        stop_worker(process)
        if runtime_log is not None:
            with open(runtime_log, "a", encoding="utf-8") as kept:
                kept.write(f"--- the probe worker ({answer.value}) output ---\n{output.read_text(errors='replace')}")


async def run_probe(release: ReleaseSurface | None = None, runtime_log: Path | None = None) -> ProbeReport:
    """Every canary answer through Dynamo's worker (one worker each, one after the other)."""
    if not dynamo_installed():
        raise UpstreamUnavailable(
            "Dynamo's packages are not installed (pip install --no-deps ai-dynamo==1.6.1 "
            "ai-dynamo-runtime==1.6.1 && pip install typing-extensions pydantic uvloop msgspec)"
        )
    release = release if release is not None else surface(installed_release())
    report = ProbeReport()
    if release.measured_as < HEALTH_PROBE_RELEASE:
        report.not_in_release = f"not in {release.release} (the health-check probe is from {HEALTH_PROBE_RELEASE})"
        return report
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="dbp-probe-"))
    try:
        for answer in CanaryAnswer:
            report.verdicts.append(await _play(answer, root, release, runtime_log))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.monotonic() - began
    return report
