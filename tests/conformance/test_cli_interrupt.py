"""Ctrl-C during a ``conform`` run: one line, exit 130, in whatever phase the run is.

A real engine's run lasts minutes, so a user interrupts it; what they get must
be the CLI's one line, not tracebacks or the loop's shutdown warnings.  Each
case runs ``conform`` in a child process on an engine that parks in one phase
and says so on stderr; the test then sends SIGINT to that child, by its id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

PARKED = "PARKED-IN "
ENGINE_MODULE = textwrap.dedent('''
    import asyncio, os
    from dynamo_backend_protocol.reference import SampleEngine

    PHASE = os.environ["PARK_IN"]


    async def park(phase):
        # Past any redirection of sys.stderr (the kit keeps from_args' own stderr for its error message).
        os.write(2, ("PARKED-IN " + phase + "\\n").encode())
        await asyncio.sleep(3600)


    class ParkingEngine(SampleEngine):
        @classmethod
        async def from_args(cls, argv):
            if PHASE == "build":
                await park("build")
            return cls(), None

        async def start(self, worker_id):
            if PHASE == "start":
                await park("start")
            return await super().start(worker_id)

        async def _stream(self, request, context):
            if PHASE == "check" and context.id() == "conformance-plain":
                await park("check")
            if PHASE == "property" and context.id().startswith("request-"):
                await park("property")
            async for chunk in super()._stream(request, context):
                yield chunk
''')
WAIT = 60.0
"""Bound on each wait for the child (its start-up, its phase, its exit)."""


@pytest.mark.parametrize("phase", ["build", "start", "check", "property"])
def test_ctrl_c_in_any_phase_prints_one_line_and_exits_130(tmp_path: Path, phase: str) -> None:
    """SIGINT in building, starting, a check or the property phase ends the run with 'interrupted' alone."""
    (tmp_path / "parking_engine.py").write_text(ENGINE_MODULE)
    child = subprocess.Popen(
        [sys.executable, "-m", "dynamo_backend_protocol", "conform", "parking_engine:ParkingEngine",
         "--examples", "3"],
        cwd=tmp_path, env={**os.environ, "PARK_IN": phase}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    # The readline below blocks until the child prints its mark; this ends the child if it never does.
    watchdog = threading.Timer(WAIT, child.kill)
    watchdog.start()
    try:
        assert child.stderr is not None
        first = child.stderr.readline()
        assert first.startswith(PARKED + phase), first
        child.send_signal(signal.SIGINT)
        _out, rest = child.communicate(timeout=WAIT)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait(timeout=WAIT)
    assert rest.splitlines() == ["interrupted"]
    assert child.returncode == 130
