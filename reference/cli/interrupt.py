"""A command's asyncio run that one Ctrl-C ends, its clean-up included, within a bound.

The run is cancelled, so its own ``finally`` blocks stop the workers it started
(by pid) and remove its folders; the command then reports an interrupt (exit
130) even if the run had finished by then.  A layer below may take a
cancellation as its own and go on (an engine's ``finally`` that swallows it):
the run is cancelled again until it ends.  If it has not ended
:data:`INTERRUPT_GRACE` seconds after the Ctrl-C, or a second Ctrl-C comes, the
process ends at once with the line ``interrupted``; the workers it started die
with it (they were started with a parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

INTERRUPT_GRACE = 30.0
"""Seconds an interrupted run has to wind down: stopping a worker takes at most 10 s before its
SIGKILL, and a run may be stopping two."""
RECANCEL_EVERY = 0.25
"""Seconds between cancellations of a run that took the last one as its own and went on."""
INTERRUPTED_EXIT = 130


def run_interruptible(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)``, ended by Ctrl-C as this module says; raises :class:`KeyboardInterrupt` then."""
    return asyncio.run(_interruptible(work))


async def _interruptible(work: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    heard = loop.create_future()
    # The run may send file descriptor 2 to a log file; the last-resort line goes to the user's terminal.
    terminal = os.dup(2)

    def on_interrupt() -> None:
        if heard.done():
            _end_process_now(terminal)
        heard.set_result(None)
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        await asyncio.wait((task, heard), return_when=asyncio.FIRST_COMPLETED)
        if not heard.done():
            return task.result()
        await _cancelled_within(task, INTERRUPT_GRACE, terminal)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        heard.cancel()
        os.close(terminal)
    raise KeyboardInterrupt


async def _cancelled_within(task: asyncio.Future[Any], grace: float, terminal: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        if loop.time() >= deadline:
            _end_process_now(terminal)
        task.cancel()
        await asyncio.wait((task,), timeout=RECANCEL_EVERY)
    if not task.cancelled():
        task.exception()  # retrieved: what the run raised while winding down gives way to the interrupt


def _end_process_now(terminal: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(terminal, b"interrupted\n")
    os._exit(INTERRUPTED_EXIT)
