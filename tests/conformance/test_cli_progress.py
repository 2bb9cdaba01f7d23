"""On a terminal, ``conform`` shows what runs now under the check lines, and counts the property phase's examples;
its status marks are coloured, unless NO_COLOR is set."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

WAIT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GREEN_PASS = "\x1b[32m[pass]"


def on_a_terminal(argv: list[str], environment: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its output; its exit status and everything it wrote."""
    controller, terminal = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "dynamo_backend_protocol", *argv], stdin=subprocess.DEVNULL,
                             stdout=terminal, stderr=terminal, close_fds=True, env=environment)
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
    return child.returncode, seen.decode(errors="replace")


def test_a_terminal_gets_a_live_line_naming_the_phase_and_counting_examples() -> None:
    """A run lasting minutes must show it is alive: the phase, the running check and 'done/total' examples
    appear while it runs,
    and the check lines and the summary are still there once the live line is erased."""
    code, raw = on_a_terminal(["conform", "--examples", "4"])
    text = ANSI.sub("", raw)
    assert code == 0
    # Each phase has its own name, with the checks it runs, and its own total: 1 late stop, then 4 schedules.
    assert "late stops: MidStreamCancellationIgnored 1/1 examples" in text
    assert "random schedules: ScheduleFailed 4/4 examples" in text
    assert "runtime kit: AbortFailed" in text and "/35] upstream's kit: StartFailed" in text
    assert "[pass] ScheduleFailed" in text and "SampleEngine conforms" in text
    assert GREEN_PASS in raw


def test_no_color_turns_the_colours_off_on_a_terminal() -> None:
    """NO_COLOR (https://no-color.org) is honoured: the same marks, without colour."""
    code, raw = on_a_terminal(["conform", "--examples", "0"], {**os.environ, "NO_COLOR": "1"})
    assert code == 0 and "[pass] StartFailed" in ANSI.sub("", raw)
    assert GREEN_PASS not in raw
