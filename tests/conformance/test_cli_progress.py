"""On a terminal, ``conform`` shows what runs now under the check lines, and counts the property phase's examples."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

WAIT = 60.0


def test_a_terminal_gets_a_live_line_naming_the_phase_and_counting_examples() -> None:
    """A run lasting minutes must show it is alive: the phase and 'done/total' examples appear while it runs,
    and the check lines and the summary are still there once the live line is erased."""
    controller, terminal = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "dynamo_backend_protocol", "conform", "--examples", "4"],
                             stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""
    until = time.monotonic() + WAIT
    try:
        while time.monotonic() < until:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
        if child.poll() is None:
            child.kill()
        child.wait(timeout=WAIT)
    text = seen.decode(errors="replace")
    assert child.returncode == 0
    assert "the property-based phase" in text and "/4" in text
    assert "[pass] ScheduleFailed" in text and "SampleEngine conforms" in text
