"""Ctrl-C during a command's asyncio run (``differential``, ``conform --runtime dynamo``): the run ends
within a bound and cleans up, whatever the layers below it do with a cancellation.

Each case runs a small program in a child process that hands a run to
``run_interruptible``, says ``ready`` once the run is under way, and is then
sent SIGINT by its process id.  The runs stand for what those commands drive:
Dynamo's client and engines, which may take a cancellation as their own.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from dynamo_backend_protocol.reference.bounded import awaited_within

WAIT = 60.0
"""Bound on each wait for the child."""

PROGRAM = textwrap.dedent('''
    import asyncio, os, sys
    from dynamo_backend_protocol.reference.cli import interrupt

    SWALLOWS = int(sys.argv[1])  # how many cancellations the run takes as its own
    interrupt.INTERRUPT_GRACE = float(sys.argv[2])
    REDIRECT = sys.argv[3] == "redirect"


    async def run():
        if REDIRECT:  # as the runtime's log does: file descriptor 2 goes to a file
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        swallowed = 0
        try:
            os.write(1, b"ready\\n")
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if swallowed == SWALLOWS:
                        raise
                    swallowed += 1
                    os.write(1, b"swallowed\\n")
        finally:
            os.write(1, b"cleaned up\\n")


    try:
        interrupt.run_interruptible(run())
    except KeyboardInterrupt:
        os.write(1, b"KeyboardInterrupt\\n")
''')
FOREVER = 10**6


def _start(swallows: int, grace: float, redirect: bool = False) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(swallows), str(grace), "redirect" if redirect else "keep"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


def _interrupt(child: subprocess.Popen[str]) -> tuple[list[str], str, float]:
    began = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=WAIT)
    return out.splitlines(), err, time.monotonic() - began


def test_a_run_that_takes_the_first_cancellation_as_its_own_still_ends_and_cleans_up() -> None:
    """The CI failure: one Ctrl-C must end the run even when a layer below swallowed the
    cancellation it caused; the run is cancelled again, its clean-up runs, and the command
    reports the interrupt."""
    child = _start(swallows=1, grace=WAIT)
    lines, err, _ = _interrupt(child)
    assert lines == ["swallowed", "cleaned up", "KeyboardInterrupt"]
    assert err == ""


def test_a_run_that_never_lets_go_is_ended_with_one_line_after_the_grace() -> None:
    """A run that swallows every cancellation cannot hold the terminal: once the grace has
    passed the process ends with ``interrupted`` and exit 130."""
    child = _start(swallows=FOREVER, grace=1.0)
    lines, err, _ = _interrupt(child)
    assert child.returncode == 130
    assert err == "interrupted\n"
    assert "cleaned up" not in lines


def test_the_last_resort_line_reaches_the_terminal_even_when_the_run_redirected_stderr() -> None:
    """The runtime's log takes file descriptor 2 while a run lasts; the one line a user gets when
    the process has to end must still reach the stderr they started it with."""
    child = _start(swallows=FOREVER, grace=1.0, redirect=True)
    _, err, _ = _interrupt(child)
    assert child.returncode == 130
    assert err == "interrupted\n"


def test_a_second_ctrl_c_ends_the_process_at_once() -> None:
    """A user who presses Ctrl-C again does not wait out the grace."""
    child = _start(swallows=FOREVER, grace=WAIT * 10)
    assert child.stdout is not None
    child.send_signal(signal.SIGINT)
    assert child.stdout.readline() == "swallowed\n"
    _, err, seconds = _interrupt(child)
    assert child.returncode == 130
    assert err == "interrupted\n"
    assert seconds < WAIT


def test_a_bounded_wait_lets_through_a_cancellation_that_comes_as_the_awaited_thing_finishes() -> None:
    """Python 3.11's ``asyncio.wait_for`` returns the result instead of the cancellation when both
    land in one loop iteration; the kit's bounded wait must not, or a Ctrl-C is lost."""

    async def race() -> None:
        finished: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(awaited_within(finished, WAIT))
        await asyncio.sleep(0)  # the wait is under way
        finished.set_result(1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(race())


def test_a_bounded_wait_gives_the_result_or_a_timeout() -> None:
    """The bound itself: a result in time is returned, a wait past the bound raises TimeoutError."""

    async def both() -> None:
        assert await awaited_within(asyncio.sleep(0, result="done"), WAIT) == "done"
        with pytest.raises(TimeoutError):
            await awaited_within(asyncio.sleep(WAIT), 0.01)

    asyncio.run(both())
